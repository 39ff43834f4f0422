//! The matcher: a Thompson NFA simulation over the program (no backtracking), so the work per
//! input character is bounded by the program's length. It steps by character (a UTF-8 code
//! point, or one invalid byte read as U+FFFD), as Go's regexp does. It never allocates; its
//! scratch (~6 KB) is on the stack.
const std = @import("std");
const assert = std.debug.assert;
const program = @import("program.zig");
const regex = @import("regex.zig");

const none = program.none;
const Inst = program.Inst;
const CharSet = program.CharSet;
const Range = program.Range;
const program_instructions_max = regex.program_instructions_max;

/// Unanchored search like Go's regexp.MatchString / RE2 PartialMatch: true when any
/// substring matches. Linear in input length; no allocation. With `steps` (see `Steps`),
/// null once the work would pass the steps left.
pub fn search(
    insts: []const Inst,
    sets: []const CharSet,
    ranges: []const Range,
    input: []const u8,
    steps: ?*u32,
) ?bool {
    assert(insts.len > 0);
    assert(insts.len <= program_instructions_max);
    var lists: [2]ThreadList = undefined;
    var stack: [program_instructions_max]u16 = undefined;
    var current = &lists[0];
    var next = &lists[1];
    current.clear();
    // Threads started after offset 0 would die at once on a leading `^`.
    const anchored = insts[0].op == .assert_begin;
    if (steps) |left| if (left.* == 0) return null;
    var pos: usize = 0;
    while (true) {
        if (pos == 0 or !anchored) {
            if (addThread(insts, current, &stack, 0, pos, input)) return true;
        }
        // The work of this offset: every instruction reached, every thread to step. One
        // offset's work (at most 2 × program_instructions_max) may pass the allowance before
        // the search stops; that is the whole overshoot.
        if (steps) |left| {
            const cost = @as(u32, current.len) + current.visited + 1;
            if (left.* < cost) {
                left.* = 0;
                return null;
            }
            left.* -= cost;
        }
        if (pos == input.len) return false;
        if (anchored and current.len == 0) return false;
        next.clear();
        const char = program.decode(input[pos..]);
        pos += char.len;
        for (current.pcs[0..current.len]) |pc| {
            const inst = insts[pc];
            assert(inst.op == .char_set);
            if (sets[inst.a].contains(ranges, char.c)) {
                if (addThread(insts, next, &stack, pc + 1, pos, input)) return true;
            }
        }
        std.mem.swap(*ThreadList, &current, &next);
    }
}

/// Follows the empty-width edges from `pc_start` at input offset `pos` and adds every
/// reachable character-consuming instruction to `list`. Returns true when `match` is reachable.
/// `list.seen` makes each instruction enter a list at most once per input offset, which is
/// what keeps matching linear and lets empty loops such as `(a*)*` terminate.
fn addThread(
    insts: []const Inst,
    list: *ThreadList,
    stack: *[program_instructions_max]u16,
    pc_start: u16,
    pos: usize,
    input: []const u8,
) bool {
    if (list.seen.isSet(pc_start)) return false;
    list.seen.set(pc_start);
    stack[0] = pc_start;
    var stack_len: usize = 1;
    while (stack_len > 0) {
        stack_len -= 1;
        list.visited += 1;
        const pc = stack[stack_len];
        const inst = insts[pc];
        var targets: [2]u16 = .{ none, none };
        switch (inst.op) {
            .match => return true,
            .char_set => {
                list.pcs[list.len] = pc;
                list.len += 1;
            },
            .jump => targets[0] = inst.a,
            .split => targets = .{ inst.a, inst.b },
            .assert_begin => if (pos == 0) {
                targets[0] = pc + 1;
            },
            .assert_end => if (pos == input.len) {
                targets[0] = pc + 1;
            },
            .assert_word_boundary, .assert_not_word_boundary => {
                const before = pos > 0 and program.isWordByte(input[pos - 1]);
                const after = pos < input.len and program.isWordByte(input[pos]);
                if ((before != after) == (inst.op == .assert_word_boundary)) targets[0] = pc + 1;
            },
        }
        for (targets) |target| {
            if (target == none or list.seen.isSet(target)) continue;
            assert(target < insts.len);
            list.seen.set(target);
            stack[stack_len] = target;
            stack_len += 1;
        }
    }
    return false;
}

const ThreadList = struct {
    /// Only `char_set` instructions; empty-width ones are resolved by `addThread`.
    pcs: [program_instructions_max]u16,
    len: u16,
    /// Instructions `addThread` reached for this list: the empty-width work of one offset.
    visited: u32,
    seen: std.StaticBitSet(program_instructions_max),

    fn clear(list: *ThreadList) void {
        list.len = 0;
        list.visited = 0;
        list.seen = .empty;
    }
};
