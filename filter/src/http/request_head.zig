//! The request headers the filter's own logic reads (`:path`, `content-type`,
//! `content-length`), each asked from the host at most once per request and only when some
//! step needs it. Before, the usage endpoint, the model label, the body checks and the
//! completions-path check each read them again: every read is a host call and a host
//! allocation (issue 17). Lives on the stack of `onRequestHeaders` (header maps are only
//! reachable until that callback returns); `deinit` frees what the host handed over.
const std = @import("std");
const host = @import("../abi/host.zig");
const request = @import("../usage/request.zig");

pub const RequestHead = struct {
    path: Lazy = .{},
    content_type: Lazy = .{},
    content_length: Lazy = .{},

    /// One header, read on first use. `bytes` stays null for a header the request lacks.
    const Lazy = struct {
        read: bool = false,
        bytes: ?host.HostBytes = null,

        fn get(self: *Lazy, name: []const u8) ?[]const u8 {
            if (!self.read) {
                self.read = true;
                self.bytes = host.getHeader(.request_headers, name) catch null;
            }
            return if (self.bytes) |bytes| bytes.bytes else null;
        }

        fn deinit(self: *Lazy) void {
            if (self.bytes) |*bytes| bytes.deinit();
            self.* = .{};
        }
    };

    pub fn deinit(self: *RequestHead) void {
        self.path.deinit();
        self.content_type.deinit();
        self.content_length.deinit();
    }

    /// The `:path` as sent (query included), or null.
    pub fn pathValue(self: *RequestHead) ?[]const u8 {
        return self.path.get(":path");
    }

    /// The declared body length; null when absent (chunked) or not a number.
    pub fn contentLength(self: *RequestHead) ?u64 {
        const text = self.content_length.get("content-length") orelse return null;
        return std.fmt.parseInt(u64, text, 10) catch null;
    }

    /// Whether the body is declared JSON (`application/json`, `...+json`, any case).
    pub fn isJson(self: *RequestHead) bool {
        const text = self.content_type.get("content-type") orelse return false;
        return std.ascii.findIgnoreCase(text, "json") != null;
    }

    /// An OpenAI-style completions path (chat or legacy), where `stream_options` applies.
    pub fn isOpenAiCompletionsPath(self: *RequestHead) bool {
        return request.isCompletionsPath(self.pathValue() orelse return false);
    }
};
