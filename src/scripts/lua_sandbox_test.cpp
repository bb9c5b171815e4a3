#include "scripts/lua_sandbox.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace imgpipe {
namespace {

using ::testing::HasSubstr;

// Records what the script asked for; the image is a fixed 640x480 JPEG.
class FakeHost final : public LuaHost {
 public:
  int Width() override { return width; }
  int Height() override { return 480; }
  std::string Format() override { return "jpeg"; }
  std::optional<std::string> Metadata(const std::string& name) override {
    if (name == "exif-ifd0-Make") return "Canon";
    return std::nullopt;
  }
  std::vector<std::string> MetadataNames() override { return {"exif-ifd0-Make"}; }
  Status Apply(const ScriptStep& step) override {
    applied.push_back(step.op);
    if (step.op == "thumbnail") width = step.width;
    return Ok();
  }
  Status AddRendition(const std::string& name, const std::string& format, int quality, int) override {
    renditions.push_back(name + ":" + format + ":" + std::to_string(quality));
    return Ok();
  }
  Status Label(const std::string& key, const std::string& value, std::optional<double> number) override {
    labels.push_back(key + "=" + value + (number ? "#" + std::to_string(static_cast<int>(*number)) : ""));
    return Ok();
  }
  void Reject(const std::string& reason) override { rejected = reason; }

  int width = 640;
  std::vector<std::string> applied;
  std::vector<std::string> renditions;
  std::vector<std::string> labels;
  std::optional<std::string> rejected;
};

LuaLimits SmallLimits() {
  LuaLimits limits;
  limits.max_instructions = 5'000'000;
  limits.max_memory_bytes = 8u << 20;
  limits.timeout = std::chrono::seconds(30);
  return limits;
}

TEST(LuaSandbox, ScriptsReachTheImageAndTheRun) {
  FakeHost host;
  const char* code = R"(
    assert(image.width() == 640 and image.height() == 480 and image.format() == "jpeg")
    run.label("make", image.metadata("exif-ifd0-Make"))
    assert(image.metadata("nothing") == nil)
    image.apply("thumbnail", {width = 100, fit = "cover", height = 100})
    run.label("width", tostring(image.width()), image.width())
    run.rendition("small", {format = "webp", quality = 60})
    local words = {}
    for w in string.gmatch("a b c", "%a") do table.insert(words, w) end
    run.label("words", table.concat(words, ","), math.floor(#words))
  )";
  Status status = RunLua(code, "api.lua", SmallLimits(), host);
  ASSERT_TRUE(status.ok()) << status.error().message;
  EXPECT_THAT(host.applied, ::testing::ElementsAre("thumbnail"));
  EXPECT_THAT(host.labels, ::testing::ElementsAre("make=Canon", "width=100#100", "words=a,b,c#3"));
  EXPECT_THAT(host.renditions, ::testing::ElementsAre("small:webp:60"));
}

TEST(LuaSandbox, RejectStopsTheScriptWithTheReason) {
  FakeHost host;
  Status status = RunLua("run.reject('too dark')\nrun.label('after', 'x')", "r.lua", SmallLimits(), host);
  ASSERT_TRUE(status.ok()) << status.error().message;
  EXPECT_EQ(host.rejected, "too dark");
  EXPECT_TRUE(host.labels.empty());
}

TEST(LuaSandbox, ScriptErrorsNameFileAndLine) {
  FakeHost host;
  Status status = RunLua("local x = 1\nerror('boom')\n", "bad.lua", SmallLimits(), host);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().code, "script_error");
  EXPECT_THAT(status.error().message, HasSubstr("bad.lua:2: boom"));
  Status wrong_step = RunLua("image.apply('thumbnail', {widht = 3})", "s.lua", SmallLimits(), host);
  ASSERT_FALSE(wrong_step.ok());
  EXPECT_THAT(wrong_step.error().message, HasSubstr("has no setting 'widht'"));
}

TEST(LuaSandbox, CheckLuaSyntaxNamesTheLine) {
  EXPECT_TRUE(CheckLuaSyntax("return 1", "ok.lua").ok());
  Status bad = CheckLuaSyntax("local a =\n\n", "bad.lua");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error().message, HasSubstr("bad.lua:"));
  EXPECT_FALSE(CheckLuaSyntax("\x1bLua\x54", "binary.lua").ok());
}

struct Escape {
  std::string name;
  std::string code;
  std::string message;  // part of the error message
  std::string code_name = "script_error";
};

class SandboxEscape : public ::testing::TestWithParam<Escape> {};

TEST_P(SandboxEscape, IsRefusedWithAClearError) {
  FakeHost host;
  Status status = RunLua(GetParam().code, "escape.lua", SmallLimits(), host);
  ASSERT_FALSE(status.ok()) << GetParam().name << " was not stopped";
  EXPECT_EQ(status.error().code, GetParam().code_name) << status.error().message;
  EXPECT_THAT(status.error().message, HasSubstr(GetParam().message));
  // The host, and the process, carry on: a fresh run right after works.
  FakeHost next;
  Status after = RunLua("run.label('ok', 'yes')", "after.lua", SmallLimits(), next);
  ASSERT_TRUE(after.ok()) << after.error().message;
  EXPECT_THAT(next.labels, ::testing::ElementsAre("ok=yes"));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, SandboxEscape,
    ::testing::Values(
        Escape{"os_execute", "os.execute('touch /tmp/pwned')", "attempt to index a nil value (global 'os')"},
        Escape{"io_open", "io.open('/etc/passwd')", "attempt to index a nil value (global 'io')"},
        Escape{"require", "require('os')", "attempt to call a nil value (global 'require')"},
        Escape{"package", "package.loadlib('libc.so.6', 'system')", "global 'package'"},
        Escape{"dofile", "dofile('/etc/passwd')", "global 'dofile'"},
        Escape{"loadfile", "loadfile('/etc/passwd')", "global 'loadfile'"},
        Escape{"load_bytecode", "local f, err = load('\\27Lua\\84\\0junk', 'x', 'b')\nerror(err)",
               "attempt to load a binary chunk"},
        Escape{"string_dump", "local d = string.dump(function() end)", "field 'dump'"},
        Escape{"string_dump_method", "local d = ('').dump(print)", "field 'dump'"},
        Escape{"debug", "debug.sethook()", "global 'debug'"},
        Escape{"getmetatable_string", "getmetatable('').__index.dump(function() end)", "field 'dump'"},
        Escape{"infinite_loop", "while true do end", "ran more than 5000000 instructions", "script_limit"},
        Escape{"loop_catching_errors", "while true do pcall(function() while true do end end) end",
               "ran more than 5000000 instructions", "script_limit"},
        Escape{"memory_bomb", "local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1000) .. i end",
               "used more than 8388608 bytes of memory", "script_limit"},
        Escape{"string_bomb", "local s = string.rep('x', 1 << 30)", "used more than 8388608 bytes", "script_limit"},
        // Lua's stack of 1M slots takes more than the 8 MiB allowed here: the memory limit stops it first.
        Escape{"deep_recursion", "local function f(n) return 1 + f(n + 1) end f(1)", "bytes of memory",
               "script_limit"},
        Escape{"deep_c_recursion",
               "local t = setmetatable({}, {__index = function(t, k) return t[k .. 'x'] end}) local _ = t.x",
               "stack overflow"}),
    [](const ::testing::TestParamInfo<Escape>& info) { return info.param.name; });

TEST(LuaSandbox, LoadOfTextRunsInTheSandbox) {
  FakeHost host;
  Status status = RunLua("local f = assert(load('run.label(\"x\", \"1\") return os')) assert(f() == nil)", "l.lua",
                         SmallLimits(), host);
  ASSERT_TRUE(status.ok()) << status.error().message;
  EXPECT_THAT(host.labels, ::testing::ElementsAre("x=1"));
}

TEST(LuaSandbox, WallClockTimeoutStopsTheScript) {
  FakeHost host;
  LuaLimits limits = SmallLimits();
  limits.max_instructions = UINT64_MAX;
  limits.timeout = std::chrono::milliseconds(0);
  Status status = RunLua("while true do end", "slow.lua", limits, host);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().code, "script_limit");
  EXPECT_THAT(status.error().message, HasSubstr("ran longer than 0 ms"));
}

}  // namespace
}  // namespace imgpipe
