//! `zig build` builds both filter modules into zig-out/bin/; `zig build test` runs the unit tests.
//! The two modules differ only in how they reach Redis (see DESIGN.md §2.1):
//!   tokenlimit.wasm          stock Envoy / Istio (Redis through the bridge, proxy_http_call)
//!   tokenlimit-higress.wasm  Higress (its proxy_redis_* host functions)
const std = @import("std");

pub fn build(b: *std.Build) void {
    // The filter ships ReleaseSmall (tens of KB); -Doptimize=debug for a debuggable build.
    const optimize = b.option(std.builtin.OptimizeMode, "optimize", "Optimization mode (default ReleaseSmall)") orelse .small;
    const wasm_target = b.resolveTargetQuery(.{ .cpu_arch = .wasm32, .os_tag = .freestanding });

    const variants = [_]struct { name: []const u8, transport: []const u8 }{
        .{ .name = "tokenlimit", .transport = "http" },
        .{ .name = "tokenlimit-higress", .transport = "higress" },
    };
    for (variants) |variant| {
        const options = b.addOptions();
        options.addOption([]const u8, "transport", variant.transport);
        const module = b.createModule(.{
            .root_source_file = b.path("src/main.zig"),
            .target = wasm_target,
            .optimize = optimize,
            .strip = optimize != .debug,
        });
        module.addOptions("build_options", options);
        addContract(b, module);
        const exe = b.addExecutable(.{ .name = variant.name, .root_module = module });
        exe.entry = .disabled;
        exe.rdynamic = true;
        b.installArtifact(exe);
    }

    const test_options = b.addOptions();
    test_options.addOption([]const u8, "transport", "http");
    const test_module = b.createModule(.{
        .root_source_file = b.path("unit_tests.zig"),
        .target = b.graph.host,
        .optimize = .debug,
    });
    test_module.addOptions("build_options", test_options);
    addContract(b, test_module);
    const unit_tests = b.addTest(.{ .root_module = test_module });
    const run_tests = b.addRunArtifact(unit_tests);
    b.step("test", "Run the filter's unit tests").dependOn(&run_tests.step);
}

/// The files the filter shares with the control plane live in ../contract (DESIGN.md §2.3);
/// they reach the source as named imports: `@embedFile("budget.lua")`.
fn addContract(b: *std.Build, module: *std.Build.Module) void {
    for ([_][]const u8{ "budget.lua", "budget.json" }) |name| {
        module.addAnonymousImport(name, .{ .root_source_file = b.path(b.fmt("../contract/{s}", .{name})) });
    }
}
