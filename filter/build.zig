//! `zig build` builds both filter modules into zig-out/bin/; `zig build test` runs the unit tests.
//! The two modules differ only in how they reach Redis (see DESIGN.md §2.1):
//!   tokenlimit.wasm          stock Envoy / Istio (Redis through the bridge, proxy_http_call)
//!   tokenlimit-higress.wasm  Higress (its proxy_redis_* host functions)
//!
//! Two things are read at configure time and handed to the source:
//!   ../contract/limits.json  every config bound the control plane enforces too, as
//!                            `@import("limits")` (see `Limits`)
//!   ../contract/metrics.json the labelled metrics' names, labels and outcomes, as
//!                            `@import("metrics_contract")` (see `metricsOptions`)
//!   src/ (recursively)       every .zig file, for the generated test root unit_tests.zig
//!                            (see `unitTestRoot`)
//! Both are declared as configure dependencies, so editing either reruns this script.
const std = @import("std");

pub fn build(b: *std.Build) void {
    // The filter ships ReleaseSmall (tens of KB); -Doptimize=debug for a debuggable build.
    const optimize = b.option(std.builtin.OptimizeMode, "optimize", "Optimization mode (default ReleaseSmall)") orelse .small;
    // Size work (issue 17): -Dstrip=false keeps the name section, so a size report
    // (bench/_overhead_size.py) can say which functions are big.
    const strip = b.option(bool, "strip", "Strip debug info and names (default: all but debug builds)") orelse (optimize != .debug);
    // Optional: binaryen's wasm-opt (`npm install binaryen`) run over each module, -Oz. About
    // 10 % smaller (bench/README.md); the default build needs nothing but zig.
    const wasm_opt = b.option([]const u8, "wasm-opt", "Path of binaryen's wasm-opt: shrink each module after linking (optional)");
    const wasm_target = b.resolveTargetQuery(.{ .cpu_arch = .wasm32, .os_tag = .freestanding });
    const limits = limitsOptions(b);
    const metrics_contract = metricsOptions(b);

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
            .strip = strip,
        });
        module.addOptions("build_options", options);
        module.addOptions("limits", limits);
        module.addOptions("metrics_contract", metrics_contract);
        addContract(b, module);
        const exe = b.addExecutable(.{ .name = variant.name, .root_module = module });
        exe.entry = .disabled;
        exe.rdynamic = true;
        if (wasm_opt) |tool| {
            const run = b.addSystemCommand(&.{ tool, "-Oz", "--strip-debug", "--enable-bulk-memory", "--enable-sign-ext", "--enable-mutable-globals", "--enable-nontrapping-float-to-int", "--enable-multivalue" });
            run.addArtifactArg(exe);
            run.addArg("-o");
            const shrunk = run.addOutputFileArg(b.fmt("{s}.wasm", .{variant.name}));
            b.getInstallStep().dependOn(&b.addInstallBinFile(shrunk, b.fmt("{s}.wasm", .{variant.name})).step);
        } else b.installArtifact(exe);
    }

    const test_step = b.step("test", "Run the filter's unit tests (every file under src/)");
    const test_root = unitTestRoot(b);
    if (test_root.problem) |problem| {
        test_step.dependOn(&b.addFail(problem).step);
        return;
    }
    // The root is written into the source tree (not the cache) because a module can only import
    // files under its root's directory, and so that failures name the real src/ paths. Written
    // only when it changes, so its mtime (a Makefile prerequisite) stays put otherwise.
    const current_root = readFile(b, test_root_path, 1024 * 1024) catch "";
    // A missing file cannot be a configure dependency; its creation reruns configure anyway.
    if (current_root.len > 0) b.dependOnFileContents(b.path(test_root_path));
    const write_root: ?*std.Build.Step.UpdateSourceFiles = if (std.mem.eql(u8, current_root, test_root.source)) null else write: {
        const write = b.addUpdateSourceFiles();
        write.addBytesToSource(test_root.source, test_root_path);
        break :write write;
    };

    const test_options = b.addOptions();
    test_options.addOption([]const u8, "transport", "http");
    const test_module = b.createModule(.{
        .root_source_file = b.path(test_root_path),
        .target = b.graph.host,
        .optimize = .debug,
    });
    test_module.addOptions("build_options", test_options);
    test_module.addOptions("limits", limits);
    test_module.addOptions("metrics_contract", metrics_contract);
    addContract(b, test_module);
    const unit_tests = b.addTest(.{ .root_module = test_module });
    if (write_root) |write| unit_tests.step.dependOn(&write.step);
    const run_tests = b.addRunArtifact(unit_tests);
    test_step.dependOn(&run_tests.step);
}

/// The files the filter shares with the control plane live in ../contract (DESIGN.md §2.3);
/// they reach the source as named imports: `@embedFile("budget.lua")`. The Lua scripts come
/// from ../contract/min/, the same scripts without comments and indentation (issue 17: half
/// their bytes), made by `python -m tokenlimit.contract_min` and committed; the bridge allows
/// exactly those (bridge/guard.py), and a stale one fails tests/contract/test_contract_min.py.
fn addContract(b: *std.Build, module: *std.Build.Module) void {
    for ([_][]const u8{ "budget.json", "calendar.json" }) |name| {
        module.addAnonymousImport(name, .{ .root_source_file = b.path(b.fmt("../contract/{s}", .{name})) });
    }
    for ([_][]const u8{ "budget.lua", "calendar.lua", "higress_compat.lua", "cache.lua" }) |name| {
        module.addAnonymousImport(name, .{ .root_source_file = b.path(b.fmt("../contract/min/{s}", .{name})) });
    }
}

// ---- limits ------------------------------------------------------------------------------------

const limits_path = "../contract/limits.json";

/// The keys of contract/limits.json and their types. Every key is required and no other key is
/// allowed (besides `_comment`): a bound renamed or dropped on one side fails the build here,
/// not a request later. The control plane (tokenlimit.model.limits) reads the same file.
const Limits = struct {
    config_bytes_max: u64,
    rule_name_bytes_max: u64,
    rule_items_max: u64,
    limit_keys_max: u64,
    key_bytes_max: u64,
    source_name_bytes_max: u64,
    route_rules_max: u64,
    rejected_msg_bytes_max: u64,
    rejected_code_min: u64,
    rejected_code_max: u64,
    rejected_code_default: u64,
    rejected_msg_default: []const u8,
    limit_max: u64,
    weight_max: u64,
    default_output_tokens_max: u64,
    port_max: u64,
    redis_service_name_bytes_max: u64,
    redis_credential_bytes_max: u64,
    redis_timeout_ms_max: u64,
    redis_database_max: u64,
    local_counters_max: u64,
    model_bytes_max: u64,
    // near the limit (issue 13): when_exhausted.max_wait_ms and max_queued
    wait_ms_max: u64,
    wait_queued_max: u64,
    bridge_cluster: []const u8,
    bridge_token_env: []const u8,
    // labelled metrics (issue 16): distinct `model` label values per worker VM
    metrics_models_max: u64,
    // Response cache (issue 15).
    cache_ttl_seconds_max: u64,
    cache_entry_bytes_max: u64,
    cache_entry_bytes_default: u64,
    cache_local_bytes_max: u64,
    // Leases for hot keys (issue 17): the largest `lease.fraction`, in thousandths.
    lease_fraction_milli_max: u64,
};

/// Reads contract/limits.json into the `limits` module: `pub const <key>: u64 = <value>;` or
/// `[]const u8` for the names. Relationships between the values are asserted where the Zig
/// code relies on them (config/config.zig), at compile time.
fn limitsOptions(b: *std.Build) *std.Build.Step.Options {
    b.dependOnFileContents(b.path(limits_path));
    const arena = b.graph.arena;
    const bytes = readFile(b, limits_path, 64 * 1024) catch |err| std.process.fatal("{s}: cannot read it ({t}); it holds the config bounds " ++
        "the filter and the control plane share", .{ limits_path, err });
    const document = std.json.parseFromSliceLeaky(std.json.Value, arena, bytes, .{}) catch |err|
        std.process.fatal("{s}: not valid JSON ({t})", .{ limits_path, err });
    const object = switch (document) {
        .object => |object| object,
        else => std.process.fatal("{s}: must be a JSON object of bounds", .{limits_path}),
    };
    for (object.keys()) |key| {
        if (std.mem.eql(u8, key, "_comment") or isLimitsKey(key)) continue;
        std.process.fatal("{s}: unknown key \"{s}\"; add it to `Limits` in build.zig (and to " ++
            "the control plane) or remove it", .{ limits_path, key });
    }
    const options = b.addOptions();
    const info = @typeInfo(Limits).@"struct";
    inline for (info.field_names, info.field_types) |name, T| {
        const value = object.get(name) orelse
            std.process.fatal("{s}: missing \"{s}\"", .{ limits_path, name });
        switch (T) {
            u64 => switch (value) {
                .integer => |integer| if (integer >= 0) {
                    options.addOption(u64, name, @intCast(integer));
                } else {
                    std.process.fatal("{s}: \"{s}\" must not be negative, got {d}", .{ limits_path, name, integer });
                },
                else => std.process.fatal("{s}: \"{s}\" must be a whole number", .{ limits_path, name }),
            },
            []const u8 => switch (value) {
                .string => |string| options.addOption([]const u8, name, string),
                else => std.process.fatal("{s}: \"{s}\" must be a string", .{ limits_path, name }),
            },
            else => @compileError("Limits." ++ name ++ ": only u64 and []const u8 are supported"),
        }
    }
    return options;
}

// ---- labelled metrics (issue 16) -----------------------------------------------------------------

const metrics_path = "../contract/metrics.json";

/// The part of contract/metrics.json the filter needs, as the `metrics_contract` module:
/// `prefix`, `label_value_bytes_max`, `model_none`, `model_other`, `outcomes` and, per metric,
/// `metric_names[i]` with its labels joined by commas in `metric_labels[i]`. The filter's
/// enums (abi/labelled_metrics.zig) are checked against these at compile time, so a name
/// changed on one side fails the build. The renderer and the dashboard read the same file.
fn metricsOptions(b: *std.Build) *std.Build.Step.Options {
    b.dependOnFileContents(b.path(metrics_path));
    const arena = b.graph.arena;
    const bytes = readFile(b, metrics_path, 64 * 1024) catch |err| std.process.fatal("{s}: cannot read it ({t}); it names the labelled metrics " ++
        "the filter, the renderer and the dashboard share", .{ metrics_path, err });
    const Metric = struct { name: []const u8, labels: []const []const u8, help: []const u8 };
    const Tag = struct { tag_name: []const u8, regex: []const u8 };
    const Contract = struct {
        _comment: []const u8,
        prefix: []const u8,
        label_value_bytes_max: u64,
        model_none: []const u8,
        model_other: []const u8,
        outcomes: []const []const u8,
        metrics: []const Metric,
        stats_tags: []const Tag,
    };
    const contract = std.json.parseFromSliceLeaky(Contract, arena, bytes, .{}) catch |err|
        std.process.fatal("{s}: does not fit the contract's shape ({t}): every key of `Contract` in build.zig, no other", .{ metrics_path, err });
    const options = b.addOptions();
    options.addOption([]const u8, "prefix", contract.prefix);
    options.addOption(u64, "label_value_bytes_max", contract.label_value_bytes_max);
    options.addOption([]const u8, "model_none", contract.model_none);
    options.addOption([]const u8, "model_other", contract.model_other);
    options.addOption([]const []const u8, "outcomes", contract.outcomes);
    const names = arena.alloc([]const u8, contract.metrics.len) catch @panic("OOM");
    const labels = arena.alloc([]const u8, contract.metrics.len) catch @panic("OOM");
    for (contract.metrics, names, labels) |metric, *name, *joined| {
        name.* = metric.name;
        joined.* = std.mem.join(arena, ",", metric.labels) catch @panic("OOM");
    }
    options.addOption([]const []const u8, "metric_names", names);
    options.addOption([]const []const u8, "metric_labels", labels);
    return options;
}

fn isLimitsKey(key: []const u8) bool {
    inline for (comptime std.meta.fieldNames(Limits)) |name| {
        if (std.mem.eql(u8, key, name)) return true;
    }
    return false;
}

// ---- the generated test root -------------------------------------------------------------------

/// Source files a native test binary cannot contain, each with the reason. Nothing else is left
/// out of `zig build test`; the build fails if an entry no longer exists (a stale exclusion) or
/// holds a `test` (its tests would silently never run). The Python suite drives these files
/// inside the real .wasm instead.
const host_only_files = [_]struct { path: []const u8, reason: []const u8 }{
    .{
        .path = "src/main.zig",
        .reason = "its `export fn`s are always compiled, and they reach the proxy-wasm host's " ++
            "`extern \"env\"` functions and std.heap.wasm_allocator, neither of which exists in a " ++
            "native binary (other files reach the host only from functions no test calls, which " ++
            "Zig does not compile)",
    },
};

const test_root_path = "unit_tests.zig";

const TestRoot = struct {
    source: []const u8,
    /// Set when the exclusion list disagrees with src/; fails `zig build test` only.
    problem: ?[]const u8 = null,
};

/// unit_tests.zig: imports every .zig file under src/ (found by walking it at configure time)
/// except `host_only_files`, so a new or moved file's tests run without anyone listing it.
fn unitTestRoot(b: *std.Build) TestRoot {
    const arena = b.graph.arena;
    const io = b.graph.io;
    var src = b.root.openDir(io, "src", .{ .iterate = true }) catch |err|
        std.process.fatal("src: cannot open it ({t})", .{err});
    defer src.close(io);
    // Creating, deleting or renaming a file in any of these directories reruns configure.
    b.dependOnDirectoryContents(b.path("src"));

    var paths: std.ArrayList([]const u8) = .empty;
    var walker = src.walk(arena) catch @panic("OOM");
    defer walker.deinit();
    while (walker.next(io) catch |err| std.process.fatal("src: cannot walk it ({t})", .{err})) |entry| {
        const path = b.fmt("src/{s}", .{entry.path});
        std.mem.replaceScalar(u8, path, '\\', '/');
        switch (entry.kind) {
            .directory => b.dependOnDirectoryContents(b.path(path)),
            .file => if (std.mem.endsWith(u8, path, ".zig")) {
                paths.append(arena, path) catch @panic("OOM");
            },
            else => {},
        }
    }
    std.mem.sort([]const u8, paths.items, {}, lessThan);

    var source: std.ArrayList(u8) = .empty;
    source.appendSlice(arena,
        \\//! Generated by build.zig (`unitTestRoot`) from every .zig file under src/: do not edit.
        \\//! `zig build test` rewrites it before compiling it, so a new or moved file's tests run
        \\//! without anyone listing it. Left out, because a native binary cannot contain them
        \\//! (reasons in build.zig, `host_only_files`; the Python suite runs them in the .wasm):
        \\
    ) catch @panic("OOM");
    for (host_only_files) |excluded| source.print(arena, "//!   {s}\n", .{excluded.path}) catch @panic("OOM");
    source.appendSlice(arena, "test {\n") catch @panic("OOM");
    var excluded_found: usize = 0;
    next_path: for (paths.items) |path| {
        for (host_only_files) |excluded| {
            if (!std.mem.eql(u8, path, excluded.path)) continue;
            excluded_found += 1;
            if (hasTests(b, path)) return .{ .source = "", .problem = b.fmt("{s} holds tests but " ++
                "is in host_only_files (build.zig), so they would never run: move them to a file " ++
                "that compiles natively", .{path}) };
            continue :next_path;
        }
        source.print(arena, "    _ = @import(\"{s}\");\n", .{path}) catch @panic("OOM");
    }
    source.appendSlice(arena, "}\n") catch @panic("OOM");
    if (excluded_found != host_only_files.len) {
        for (host_only_files) |excluded| {
            for (paths.items) |path| {
                if (std.mem.eql(u8, path, excluded.path)) break;
            } else return .{ .source = "", .problem = b.fmt("host_only_files (build.zig) names " ++
                "{s}, which is not under src/ any more: remove or rename the entry", .{excluded.path}) };
        }
    }
    return .{ .source = source.items };
}

/// Whether a file declares a test (at any nesting), by its `test "name"` / `test name` /
/// `test {` lines; the file becomes a configure dependency.
fn hasTests(b: *std.Build, path: []const u8) bool {
    b.dependOnFileContents(b.path(path));
    const bytes = readFile(b, path, 16 * 1024 * 1024) catch |err|
        std.process.fatal("{s}: cannot read it ({t})", .{ path, err });
    var lines = std.mem.splitScalar(u8, bytes, '\n');
    while (lines.next()) |line| {
        const code = std.mem.trimStart(u8, line, " \t");
        if (std.mem.startsWith(u8, code, "test ") or std.mem.startsWith(u8, code, "test{")) return true;
    }
    return false;
}

/// A file relative to the build root (this directory), read at configure time.
fn readFile(b: *std.Build, sub_path: []const u8, bytes_max: usize) ![]u8 {
    const path = b.root.join(b.graph.arena, sub_path) catch @panic("OOM");
    return path.root_dir.handle.readFileAlloc(b.graph.io, path.sub_path, b.graph.arena, .limited(bytes_max));
}

fn lessThan(_: void, a: []const u8, b: []const u8) bool {
    return std.mem.lessThan(u8, a, b);
}
