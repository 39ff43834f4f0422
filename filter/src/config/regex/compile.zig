//! Node tree → program: a Thompson construction into `Inst`s, with counted repetition expanded
//! (so `x{3}` is three copies of `x`). The program is bounded by `program_instructions_max`;
//! overflowing it blames the outermost repetition being expanded.
const std = @import("std");
const assert = std.debug.assert;
const parse = @import("parse.zig");
const program = @import("program.zig");
const regex = @import("regex.zig");

const none = program.none;
const Op = program.Op;
const Inst = program.Inst;
const Node = parse.Node;
const unbounded = parse.unbounded;
const CompileError = regex.CompileError;
const Diagnostic = regex.Diagnostic;
const program_instructions_max = regex.program_instructions_max;

/// Caps compile work for repetitions of empty sub-patterns such as `((){1000}){1000}`, which
/// emit no instructions and so never hit `program_instructions_max`.
const compile_steps_max = 16 * program_instructions_max;

pub const Compiler = struct {
    nodes: []const Node,
    diagnostic: ?*Diagnostic,
    insts: [program_instructions_max]Inst = undefined,
    insts_len: u16 = 0,
    compile_steps: u32 = 0,
    /// Offset of the outermost repetition being compiled, blamed when the program overflows.
    repeat_offset: u16 = 0,

    pub fn emit(c: *Compiler, op: Op, a: u16, b: u16) CompileError!u16 {
        if (c.insts_len == program_instructions_max) return c.programTooLarge();
        c.insts[c.insts_len] = .{ .op = op, .a = a, .b = b };
        c.insts_len += 1;
        return c.insts_len - 1;
    }

    fn programTooLarge(c: *Compiler) CompileError {
        const message = std.fmt.comptimePrint(
            "pattern expands to more than {d} instructions; reduce the counted repetition",
            .{program_instructions_max},
        );
        if (c.diagnostic) |d| d.* = .{ .offset = c.repeat_offset, .message = message };
        return error.PatternTooComplex;
    }

    /// Forward targets are unknown when emitted, so pending instructions form a chain linked
    /// through the operand `field` that will hold the target (ended by `none`).
    fn patchChain(c: *Compiler, comptime field: []const u8, chain_first: u16, target: u16) void {
        var pc = chain_first;
        while (pc != none) {
            const next = @field(c.insts[pc], field);
            @field(c.insts[pc], field) = target;
            pc = next;
        }
    }

    pub fn compileNode(c: *Compiler, index: u16) CompileError!void {
        c.compile_steps += 1;
        if (c.compile_steps > compile_steps_max) return c.programTooLarge();
        const node = c.nodes[index];
        switch (node.kind) {
            .empty => {},
            .set => _ = try c.emit(.char_set, node.a, 0),
            .assert_begin => _ = try c.emit(.assert_begin, 0, 0),
            .assert_end => _ = try c.emit(.assert_end, 0, 0),
            .word_boundary => _ = try c.emit(.assert_word_boundary, 0, 0),
            .not_word_boundary => _ = try c.emit(.assert_not_word_boundary, 0, 0),
            .concat => {
                var child = node.a;
                while (child != none) : (child = c.nodes[child].next) try c.compileNode(child);
            },
            .alternation => {
                // split L1, L2; L1: branch 1; jump end; L2: split ...; last branch; end:
                var jumps: u16 = none;
                var child = node.a;
                while (c.nodes[child].next != none) : (child = c.nodes[child].next) {
                    const split = try c.emit(.split, c.insts_len + 1, 0);
                    try c.compileNode(child);
                    jumps = try c.emit(.jump, jumps, 0);
                    c.insts[split].b = c.insts_len;
                }
                try c.compileNode(child);
                c.patchChain("a", jumps, c.insts_len);
            },
            .repeat => {
                const outermost = c.repeat_offset == 0;
                if (outermost) c.repeat_offset = node.offset;
                defer if (outermost) {
                    c.repeat_offset = 0;
                };
                try c.compileRepeat(node);
            },
        }
    }

    fn compileRepeat(c: *Compiler, node: Node) CompileError!void {
        assert(node.kind == .repeat);
        assert(node.min <= node.max);
        if (node.max == unbounded and node.min == 0) {
            // L: split L+1, out; body; jump L; out:
            const split = try c.emit(.split, c.insts_len + 1, 0);
            try c.compileNode(node.a);
            _ = try c.emit(.jump, split, 0);
            c.insts[split].b = c.insts_len;
        } else if (node.max == unbounded) {
            // body{min - 1}; L: body; split L, out; out:
            for (1..node.min) |_| try c.compileNode(node.a);
            const body = c.insts_len;
            try c.compileNode(node.a);
            _ = try c.emit(.split, body, c.insts_len + 1);
        } else {
            // body{min}, then each optional copy may skip to the end: x{1,3} = x(?:x(?:x)?)?
            for (0..node.min) |_| try c.compileNode(node.a);
            var skips: u16 = none;
            for (node.min..node.max) |_| {
                skips = try c.emit(.split, c.insts_len + 1, skips);
                try c.compileNode(node.a);
            }
            c.patchChain("b", skips, c.insts_len);
        }
    }
};
