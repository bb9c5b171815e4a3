// exec steps run real programs (Debian python3, sh) in the sandbox of exec_sandbox.hpp, through RunScript.
#include <signal.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "processing/image_probe.hpp"
#include "scripts/exec_sandbox.hpp"
#include "scripts/script_runner.hpp"

namespace imgpipe {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

std::string Kodim() { return (fs::path(IMGPIPE_CORPORA_DIR) / "valid/kodak/kodim23.png").string(); }  // 768x512

// A script whose one main step runs `program` (a Python file of the script) with the given extra step settings.
ScriptBundle PythonScript(const std::string& program, const std::string& settings = "",
                          const std::string& renditions = "") {
  ScriptBundle bundle;
  bundle.name = "exec-test";
  bundle.version = std::string(64, 'e');
  bundle.files["pipeline.toml"] =
      "[[steps]]\nop = \"exec\"\ncommand = [\"python3\", \"main.py\"]\n" + settings + "\n" + renditions;
  bundle.files["main.py"] = program;
  auto manifest = ValidateScriptFiles(bundle.files);
  EXPECT_TRUE(manifest.ok()) << manifest.error().message;
  if (manifest.ok()) bundle.manifest = std::move(manifest).value();
  return bundle;
}

std::map<std::string, std::string> Labels(const ScriptRunOutput& out) {
  std::map<std::string, std::string> labels;
  for (const ScriptLabel& l : out.labels) labels[l.key] = l.value;
  return labels;
}

class ExecStepTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { InitVips(1); }
};

// The program reads the image and its metadata, computes labels from the pixels, and hands back an image.
TEST_F(ExecStepTest, PythonComputesLabelsFromTheImage) {
  const std::string program = R"(
import json
meta = json.load(open("input.json"))
data = open(meta["input"], "rb").read()
magic, size, maxval, pixels = data.split(b"\n", 3)
width, height = map(int, size.split())
assert magic == b"P6" and (width, height) == (meta["width"], meta["height"])
mean = sum(pixels) / len(pixels)
result = {
  "labels": [
    {"key": "mean_brightness", "value": "%.1f" % mean, "number": mean},
    {"key": "seen_size", "value": "%dx%d" % (width, height)},
    {"key": "script", "value": meta["script"]["name"]},
  ],
}
json.dump(result, open("result.json", "w"))
)";
  auto out = RunScript(PythonScript(program, "input = \"pnm\""), Kodim());
  ASSERT_TRUE(out.ok()) << out.error().message;
  auto labels = Labels(*out);
  EXPECT_EQ(labels["seen_size"], "768x512");
  EXPECT_EQ(labels["script"], "exec-test");
  ASSERT_EQ(out->labels[0].key, "mean_brightness");
  ASSERT_TRUE(out->labels[0].number.has_value());
  EXPECT_GT(*out->labels[0].number, 20.0);
  EXPECT_LT(*out->labels[0].number, 235.0);
}

TEST_F(ExecStepTest, OutputFilesBecomeRenditionsAndTheNextImage) {
  // The program crops nothing itself: it hands its input back twice, once as a rendition and once as the image
  // the next steps work on (a thumbnail here), which checks both paths through imgpipe's decoder.
  const std::string program = R"(
import json, shutil
shutil.copy("input.png", "copy.png")
json.dump({"renditions": [{"name": "copy", "file": "copy.png", "format": "webp"}], "image": "copy.png"},
          open("result.json", "w"))
)";
  auto out = RunScript(PythonScript(program, "", "[[steps]]\nop = \"thumbnail\"\nwidth = 100\n\n"
                                                 "[[renditions]]\nname = \"small\"\nformat = \"png\"\n"),
                       Kodim());
  ASSERT_TRUE(out.ok()) << out.error().message;
  ASSERT_EQ(out->renditions.size(), 2u);
  EXPECT_EQ(out->renditions[0].name, "small");
  EXPECT_EQ(out->renditions[0].width, 100);
  EXPECT_EQ(out->renditions[1].name, "copy");
  EXPECT_EQ(out->renditions[1].format, "webp");
  EXPECT_EQ(out->renditions[1].width, 768);
}

TEST_F(ExecStepTest, ResultCanRejectTheImage) {
  auto out = RunScript(PythonScript("open('result.json', 'w').write('{\"reject\": \"no cats\"}')"), Kodim());
  ASSERT_TRUE(out.ok()) << out.error().message;
  EXPECT_EQ(out->rejected, "no cats");
  EXPECT_TRUE(out->renditions.empty());
}

TEST_F(ExecStepTest, AHangingProgramAndItsChildrenAreKilledAtTheTimeout) {
  const std::string program = R"(
import subprocess, sys, time
child = subprocess.Popen(["sleep", "1000"])
print("child", child.pid, "end", flush=True)
time.sleep(1000)
)";
  auto out = RunScript(PythonScript(program, "timeout = 1"), Kodim());
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.error().code, "script_limit");
  EXPECT_THAT(out.error().message, HasSubstr("pipeline.toml:1: step 'exec' ran longer than 1 s and was killed"));
  // The grandchild was in the program's process group, so it died with it (gone, or a zombie awaiting its reaper).
  const std::string& message = out.error().message;
  const size_t at = message.find("child ");
  ASSERT_NE(at, std::string::npos) << message;
  const pid_t grandchild = std::atoi(message.c_str() + at + 6);
  ASSERT_GT(grandchild, 0);
  // SIGKILL was sent to the group; the grandchild dies when the scheduler next runs it (a loaded machine may take a
  // moment), so wait for that event, bounded.
  auto running = [&] {
    std::ifstream stat("/proc/" + std::to_string(grandchild) + "/stat");
    std::string pid, comm, state;
    return static_cast<bool>(stat >> pid >> comm >> state) && state != "Z" && state != "X";
  };
  for (int i = 0; i < 600 && running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(running()) << "grandchild " << grandchild << " still runs 30 s after the group was killed";
}

TEST_F(ExecStepTest, AProgramOverItsMemoryLimitIsStopped) {
  auto out = RunScript(PythonScript("block = bytearray(1024 * 1024 * 1024)\nopen('result.json', 'w').write('{}')",
                                    "memory = 128"),
                       Kodim());
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.error().code, "script_error");
  EXPECT_THAT(out.error().message, HasSubstr("exited with status 1"));
  EXPECT_THAT(out.error().message, HasSubstr("memory 128 MiB"));
  EXPECT_THAT(out.error().message, HasSubstr("MemoryError"));
}

TEST_F(ExecStepTest, AProgramOverItsCpuLimitIsStopped) {
  auto out = RunScript(PythonScript("while True:\n  pass\n", "cpu = 1\ntimeout = 600"), Kodim());
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.error().code, "script_limit");
  EXPECT_THAT(out.error().message, HasSubstr("used more than 1 s of CPU"));
}

// Every place it tries outside its folder is refused. A folder of imgpipe's user (0755) is protected by the user
// switch when imgpipe is root; world-writable folders (/tmp, the folder above its own, a 0777 one) only by Landlock,
// which CI's kernel has (Debian 12's kernels enable it).
TEST_F(ExecStepTest, AProgramCannotWriteOutsideItsFolder) {
  std::random_device random;
  const std::string tag = std::to_string(random());
  const fs::path open_to_all = fs::temp_directory_path() / ("imgpipe-exec-test-" + tag);
  const fs::path owned = fs::temp_directory_path() / ("imgpipe-exec-test-owned-" + tag);
  fs::create_directories(open_to_all);
  fs::create_directories(owned);
  fs::permissions(open_to_all, fs::perms::all);
  fs::permissions(owned, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                             fs::perms::others_read | fs::perms::others_exec);
  const std::vector<std::string> targets = {(owned / "escape").string(), "/tmp/imgpipe-escape-" + tag,
                                            (open_to_all / "escape").string(), "../imgpipe-escape-" + tag};
  ASSERT_TRUE(::geteuid() == 0 || LandlockAbi() > 0) << "neither root (user switch) nor Landlock: nothing to test";
  std::string list;
  for (const std::string& t : targets) list += "\"" + t + "\", ";
  const std::string program = R"(
import json, os
escaped = []
for target in [)" + list + R"(]:
    try:
        with open(target, "w") as f:
            f.write("x")
        escaped.append(target)
    except OSError as e:
        pass
try:
    os.mkdir("/tmp/imgpipe-escape-dir-)" + tag + R"(")
    escaped.append("mkdir")
except OSError:
    pass
with open("inside.txt", "w") as f:
    f.write("fine")
json.dump({"labels": [{"key": "escaped", "value": ",".join(escaped)},
                      {"key": "inside", "value": open("inside.txt").read()}]}, open("result.json", "w"))
)";
  auto out = RunScript(PythonScript(program), Kodim());
  ASSERT_TRUE(out.ok()) << out.error().message;
  auto labels = Labels(*out);
  EXPECT_EQ(labels["inside"], "fine");
  if (LandlockAbi() > 0) {
    EXPECT_EQ(labels["escaped"], "");
    for (const std::string& t : targets) EXPECT_FALSE(fs::exists(t)) << t;
    EXPECT_FALSE(fs::exists("/tmp/imgpipe-escape-dir-" + tag));
  } else {
    ADD_FAILURE() << "this kernel has no Landlock: only the user switch protects imgpipe's files";
    EXPECT_THAT(labels["escaped"], Not(HasSubstr(targets[0])));
  }
  fs::remove_all(open_to_all);
  fs::remove_all(owned);
  fs::remove("/tmp/imgpipe-escape-" + tag);
}

TEST_F(ExecStepTest, ASymlinkedResultIsNotFollowed) {
  auto out = RunScript(PythonScript("import os\nos.symlink('/etc/passwd', 'result.json')"), Kodim());
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(out.error().message, HasSubstr("output file 'result.json' is a symlink"));
}

TEST_F(ExecStepTest, TheEnvironmentIsOnlyWhatTheStepDeclares) {
  ::setenv("IMGPIPE_TEST_EXEC_SECRET", "hunter2", 1);
  const std::string program = R"(
import json, os
json.dump({"labels": [{"key": k, "value": v} for k, v in sorted(os.environ.items())]}, open("result.json", "w"))
)";
  auto out = RunScript(PythonScript(program, "env = { GREETING = \"hello\" }"), Kodim());
  ::unsetenv("IMGPIPE_TEST_EXEC_SECRET");
  ASSERT_TRUE(out.ok()) << out.error().message;
  auto labels = Labels(*out);
  labels.erase("LC_CTYPE");  // Python sets it itself in a C locale (PEP 538)
  EXPECT_EQ(labels, (std::map<std::string, std::string>{{"GREETING", "hello"}}));
}

TEST_F(ExecStepTest, TheFolderIsRemovedAfterTheRun) {
  const std::string program = R"(
import json, os
os.makedirs("deep/er", exist_ok=True)
open("deep/er/file", "w").write("x")
os.chmod("deep", 0)
json.dump({"labels": [{"key": "cwd", "value": os.getcwd()}]}, open("result.json", "w"))
)";
  auto out = RunScript(PythonScript(program), Kodim());
  ASSERT_TRUE(out.ok()) << out.error().message;
  const std::string cwd = Labels(*out)["cwd"];
  EXPECT_THAT(cwd, HasSubstr("imgpipe-exec-"));
  EXPECT_FALSE(fs::exists(cwd));
}

TEST_F(ExecStepTest, ProblemsNameTheStepAndWhatWentWrong) {
  auto missing = RunScript(PythonScript("pass"), Kodim());
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.error().message, HasSubstr("pipeline.toml:1: step 'exec': exec step: output file "
                                                 "'result.json' is missing"));

  auto failing = RunScript(PythonScript("import sys\nprint('bad input')\nsys.exit(3)"), Kodim());
  ASSERT_FALSE(failing.ok());
  EXPECT_THAT(failing.error().message, HasSubstr("exited with status 3"));
  EXPECT_THAT(failing.error().message, HasSubstr("its output ends with: bad input"));

  auto bad_json = RunScript(PythonScript("open('result.json', 'w').write('{\"labels\": 3}')"), Kodim());
  ASSERT_FALSE(bad_json.ok());
  EXPECT_THAT(bad_json.error().message, HasSubstr("result.json: labels must be an array"));

  auto bad_image = RunScript(
      PythonScript("open('x.png', 'wb').write(b'\\x89PNG\\r\\n\\x1a\\n' + b'junk' * 100)\n"
                   "open('result.json', 'w').write('{\"image\": \"x.png\"}')"),
      Kodim());
  ASSERT_FALSE(bad_image.ok());
  EXPECT_THAT(bad_image.error().message, HasSubstr("output image 'x.png' does not decode"));

  ScriptBundle nowhere = PythonScript("pass");
  nowhere.manifest.steps[0].command = {"no-such-program-anywhere"};
  auto not_found = RunScript(nowhere, Kodim());
  ASSERT_FALSE(not_found.ok());
  EXPECT_THAT(not_found.error().message, HasSubstr("program 'no-such-program-anywhere' is not in PATH"));
}

TEST_F(ExecStepTest, RunsAsAnotherUserWhenRoot) {
  const std::string program = R"(
import json, os
json.dump({"labels": [{"key": "uid", "value": str(os.getuid())}]}, open("result.json", "w"))
)";
  auto out = RunScript(PythonScript(program), Kodim());
  ASSERT_TRUE(out.ok()) << out.error().message;
  const std::string uid = Labels(*out)["uid"];
  if (::geteuid() == 0) {
    EXPECT_NE(uid, "0");
  } else {
    EXPECT_EQ(uid, std::to_string(::geteuid()));
  }
}

}  // namespace
}  // namespace imgpipe
