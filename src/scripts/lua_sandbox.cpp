#include "scripts/lua_sandbox.hpp"

extern "C" {
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
}

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <memory>

namespace imgpipe {
namespace {

// How often the count hook runs. Small enough that a limit is overshot by little, large enough to cost nothing.
constexpr int kHookEvery = 1000;

enum class Stop { kNone, kInstructions, kMemory, kTimeout };

// Everything one run shares with the allocator, the hook and the API functions. Reached from a lua_State through
// lua_getallocf's user data.
struct Sandbox {
  LuaLimits limits;
  LuaHost* host = nullptr;
  size_t used = 0;
  // While a host call runs, its pushes of results may pass the memory limit: failing there would longjmp across the
  // C++ frames of the call. What they add is small and bounded by the API (one string or table per call).
  bool in_host = false;
  uint64_t instructions = 0;
  std::chrono::steady_clock::time_point deadline;
  Stop stop = Stop::kNone;
  bool rejected = false;
};

Sandbox& Of(lua_State* L) {
  void* ud = nullptr;
  lua_getallocf(L, &ud);
  return *static_cast<Sandbox*>(ud);
}

void* Allocate(void* ud, void* ptr, size_t osize, size_t nsize) {
  auto& box = *static_cast<Sandbox*>(ud);
  const size_t old = ptr != nullptr ? osize : 0;
  if (nsize == 0) {
    std::free(ptr);
    box.used -= old;
    return nullptr;
  }
  if (nsize > old && box.used - old + nsize > box.limits.max_memory_bytes && !box.in_host) {
    if (box.stop == Stop::kNone) box.stop = Stop::kMemory;
    return nullptr;
  }
  void* grown = std::realloc(ptr, nsize);
  if (grown == nullptr) return nullptr;
  box.used = box.used - old + nsize;
  return grown;
}

// Once a limit is hit, the hook runs before every instruction and raises the error each time: a script that catches
// it with pcall raises it again at its next instruction, up to the main chunk, where nothing can catch it.
void CountHook(lua_State* L, lua_Debug*) {
  Sandbox& box = Of(L);
  if (box.stop == Stop::kNone) {
    box.instructions += kHookEvery;
    if (box.instructions > box.limits.max_instructions) {
      box.stop = Stop::kInstructions;
    } else if (std::chrono::steady_clock::now() > box.deadline) {
      box.stop = Stop::kTimeout;
    }
  }
  if (box.stop == Stop::kNone) return;
  lua_sethook(L, CountHook, LUA_MASKCOUNT, 1);
  luaL_error(L, box.stop == Stop::kInstructions ? "instruction limit reached"
                : box.stop == Stop::kTimeout    ? "time limit reached"
                                                : "memory limit reached");
}

// Host calls: C++ work happens inside Guarded(), whose objects are all destroyed before lua_error unwinds (Lua's
// errors longjmp and would skip destructors). Arguments are read with functions that never raise.
using HostCall = int (*)(lua_State* L, Sandbox& box, std::string& error);

template <HostCall Call>
int Guarded(lua_State* L) {
  Sandbox& box = Of(L);
  int results = 0;
  bool failed = false;
  {
    std::string error;
    box.in_host = true;
    try {
      results = Call(L, box, error);
    } catch (const std::exception& e) {
      error = std::string("internal error: ") + e.what();
    }
    box.in_host = false;
    if (!error.empty()) {
      lua_pushlstring(L, error.data(), error.size());
      failed = true;
    }
  }
  if (failed) return lua_error(L);
  return results;
}

std::optional<std::string> StringArg(lua_State* L, int index) {
  if (lua_type(L, index) != LUA_TSTRING) return std::nullopt;
  size_t length = 0;
  const char* text = lua_tolstring(L, index, &length);
  return std::string(text, length);
}

int ImageWidth(lua_State* L, Sandbox& box, std::string&) {
  lua_pushinteger(L, box.host->Width());
  return 1;
}
int ImageHeight(lua_State* L, Sandbox& box, std::string&) {
  lua_pushinteger(L, box.host->Height());
  return 1;
}
int ImageFormat(lua_State* L, Sandbox& box, std::string&) {
  const std::string format = box.host->Format();
  lua_pushlstring(L, format.data(), format.size());
  return 1;
}
int ImageMetadata(lua_State* L, Sandbox& box, std::string& error) {
  auto name = StringArg(L, 1);
  if (!name) {
    error = "image.metadata(name): name must be a string";
    return 0;
  }
  auto value = box.host->Metadata(*name);
  if (value) {
    lua_pushlstring(L, value->data(), value->size());
  } else {
    lua_pushnil(L);
  }
  return 1;
}
int ImageMetadataNames(lua_State* L, Sandbox& box, std::string&) {
  const std::vector<std::string> names = box.host->MetadataNames();
  lua_createtable(L, static_cast<int>(names.size()), 0);
  for (size_t i = 0; i < names.size(); ++i) {
    lua_pushlstring(L, names[i].data(), names[i].size());
    lua_rawseti(L, -2, static_cast<lua_Integer>(i + 1));
  }
  return 1;
}

// Reads a table of settings {key = number or string} at `index`.
bool ReadSettings(lua_State* L, int index, std::map<std::string, StepSetting>* out, std::string& error) {
  if (lua_isnoneornil(L, index)) return true;
  if (lua_type(L, index) != LUA_TTABLE) {
    error = "settings must be a table like {width = 256}";
    return false;
  }
  lua_pushnil(L);
  while (lua_next(L, index) != 0) {
    auto key = StringArg(L, -2);
    if (!key) {
      lua_pop(L, 2);
      error = "settings keys must be strings";
      return false;
    }
    if (lua_type(L, -1) == LUA_TSTRING) {
      (*out)[*key] = *StringArg(L, -1);
    } else if (lua_isinteger(L, -1)) {
      (*out)[*key] = static_cast<int64_t>(lua_tointeger(L, -1));
    } else if (lua_type(L, -1) == LUA_TNUMBER) {
      (*out)[*key] = static_cast<double>(lua_tonumber(L, -1));
    } else {
      lua_pop(L, 2);
      error = "setting '" + *key + "' must be a number or a string";
      return false;
    }
    lua_pop(L, 1);
  }
  return true;
}

int ImageApply(lua_State* L, Sandbox& box, std::string& error) {
  auto op = StringArg(L, 1);
  if (!op) {
    error = "image.apply(op, settings): op must be a string naming a step";
    return 0;
  }
  std::map<std::string, StepSetting> settings;
  if (!ReadSettings(L, 2, &settings, error)) return 0;
  auto step = MakeScriptStep(*op, settings);
  if (!step.ok()) {
    error = "image.apply('" + *op + "'): " + step.error().message;
    return 0;
  }
  Status applied = box.host->Apply(*step);
  if (!applied.ok()) error = "image.apply('" + *op + "'): " + applied.error().message;
  return 0;
}

int RunRendition(lua_State* L, Sandbox& box, std::string& error) {
  auto name = StringArg(L, 1);
  if (!name) {
    error = "run.rendition(name, {format=, quality=, effort=}): name must be a string";
    return 0;
  }
  std::map<std::string, StepSetting> settings;
  if (!ReadSettings(L, 2, &settings, error)) return 0;
  auto format = settings.find("format");
  std::map<std::string, StepSetting> convert = settings;
  if (format == settings.end()) convert["format"] = std::string("jpeg");
  auto step = MakeScriptStep("convert", convert);
  if (!step.ok()) {
    error = "run.rendition('" + *name + "'): " + step.error().message;
    return 0;
  }
  Status added = box.host->AddRendition(*name, step->format, step->quality, step->effort);
  if (!added.ok()) error = "run.rendition('" + *name + "'): " + added.error().message;
  return 0;
}

int RunLabel(lua_State* L, Sandbox& box, std::string& error) {
  auto key = StringArg(L, 1);
  std::optional<std::string> value;
  if (lua_type(L, 2) == LUA_TNUMBER) {
    char text[64];
    std::snprintf(text, sizeof text, "%.17g", static_cast<double>(lua_tonumber(L, 2)));
    value = text;
  } else {
    value = StringArg(L, 2);
  }
  if (!key || !value) {
    error = "run.label(key, value [, number]): key and value must be strings";
    return 0;
  }
  std::optional<double> number;
  if (lua_type(L, 3) == LUA_TNUMBER) {
    number = static_cast<double>(lua_tonumber(L, 3));
  } else if (!lua_isnoneornil(L, 3)) {
    error = "run.label(key, value, number): number must be a number";
    return 0;
  }
  Status labelled = box.host->Label(*key, *value, number);
  if (!labelled.ok()) error = "run.label('" + *key + "'): " + labelled.error().message;
  return 0;
}

int RunReject(lua_State* L, Sandbox& box, std::string& error) {
  auto reason = StringArg(L, 1);
  box.host->Reject(reason ? reason->substr(0, 1000) : "rejected by the script");
  box.rejected = true;
  error = "image rejected";  // unwinds the script; RunLua turns it into success
  return 0;
}

// load() for text only: load(chunk [, chunkname [, mode [, env]]]) with mode forced to "t". A bytecode chunk is
// refused by Lua itself ("attempt to load a binary chunk").
int SafeLoad(lua_State* L) {
  size_t length = 0;
  const char* chunk = luaL_checklstring(L, 1, &length);
  const char* name = luaL_optstring(L, 2, "=(load)");
  const bool has_env = !lua_isnone(L, 4);
  if (luaL_loadbufferx(L, chunk, length, name, "t") != LUA_OK) {
    luaL_pushfail(L);
    lua_insert(L, -2);
    return 2;
  }
  if (has_env) {
    lua_pushvalue(L, 4);
    if (lua_setupvalue(L, -2, 1) == nullptr) lua_pop(L, 1);
  }
  return 1;
}

void SetFunctions(lua_State* L, const char* table, const luaL_Reg* functions) {
  lua_newtable(L);
  luaL_setfuncs(L, functions, 0);
  lua_setglobal(L, table);
}

// Builds the sandboxed globals. Runs under lua_pcall, so an allocation failure here is an error, not a panic.
int OpenSandbox(lua_State* L) {
  luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
  luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
  luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
  luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
  luaL_requiref(L, LUA_UTF8LIBNAME, luaopen_utf8, 1);
  lua_pop(L, 5);
  for (const char* name : {"dofile", "loadfile", "collectgarbage", "print"}) {
    lua_pushnil(L);
    lua_setglobal(L, name);
  }
  lua_pushcfunction(L, SafeLoad);
  lua_setglobal(L, "load");
  lua_getglobal(L, LUA_STRLIBNAME);
  lua_pushnil(L);
  lua_setfield(L, -2, "dump");
  lua_pop(L, 1);
  // The package table registered by requiref's loaded table stays unreachable: no `package` or `require` global.
  static const luaL_Reg kImage[] = {{"width", Guarded<ImageWidth>},
                                    {"height", Guarded<ImageHeight>},
                                    {"format", Guarded<ImageFormat>},
                                    {"metadata", Guarded<ImageMetadata>},
                                    {"metadata_names", Guarded<ImageMetadataNames>},
                                    {"apply", Guarded<ImageApply>},
                                    {nullptr, nullptr}};
  static const luaL_Reg kRun[] = {{"rendition", Guarded<RunRendition>},
                                  {"label", Guarded<RunLabel>},
                                  {"reject", Guarded<RunReject>},
                                  {nullptr, nullptr}};
  SetFunctions(L, "image", kImage);
  SetFunctions(L, "run", kRun);
  return 0;
}

struct StateCloser {
  void operator()(lua_State* L) const { lua_close(L); }
};

std::string ErrorText(lua_State* L) {
  size_t length = 0;
  const char* text = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &length) : nullptr;
  return text != nullptr ? std::string(text, length) : "an error object that is not a string";
}

Error LimitError(const std::string& file, const Sandbox& box) {
  std::string what;
  switch (box.stop) {
    case Stop::kInstructions:
      what = "ran more than " + std::to_string(box.limits.max_instructions) + " instructions";
      break;
    case Stop::kMemory:
      what = "used more than " + std::to_string(box.limits.max_memory_bytes) + " bytes of memory";
      break;
    case Stop::kTimeout:
      what = "ran longer than " + std::to_string(box.limits.timeout.count()) + " ms";
      break;
    case Stop::kNone:
      break;
  }
  return MakeError(ErrorKind::kInvalidArgument, "lua step '" + file + "' was stopped: it " + what, "script_limit");
}

}  // namespace

Status CheckLuaSyntax(std::string_view code, const std::string& file) {
  Sandbox box;
  box.limits.max_memory_bytes = 64u << 20;
  std::unique_ptr<lua_State, StateCloser> state(lua_newstate(Allocate, &box));
  if (!state) return MakeError(ErrorKind::kInternal, "cannot create a Lua state");
  const std::string chunk_name = "=" + file;
  if (luaL_loadbufferx(state.get(), code.data(), code.size(), chunk_name.c_str(), "t") != LUA_OK) {
    return MakeError(ErrorKind::kInvalidArgument, ErrorText(state.get()), "invalid_script");
  }
  return Ok();
}

Status RunLua(std::string_view code, const std::string& file, const LuaLimits& limits, LuaHost& host) {
  Sandbox box;
  box.limits = limits;
  box.host = &host;
  box.deadline = std::chrono::steady_clock::now() + limits.timeout;
  std::unique_ptr<lua_State, StateCloser> state(lua_newstate(Allocate, &box));
  if (!state) return MakeError(ErrorKind::kInternal, "cannot create a Lua state");
  lua_State* L = state.get();
  lua_pushcfunction(L, OpenSandbox);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
    return MakeError(ErrorKind::kInternal, "cannot set up the Lua sandbox: " + ErrorText(L));
  }
  const std::string chunk_name = "=" + file;
  if (luaL_loadbufferx(L, code.data(), code.size(), chunk_name.c_str(), "t") != LUA_OK) {
    if (box.stop != Stop::kNone) return LimitError(file, box);
    return MakeError(ErrorKind::kInvalidArgument, ErrorText(L), "script_error");
  }
  lua_sethook(L, CountHook, LUA_MASKCOUNT, kHookEvery);
  const int rc = lua_pcall(L, 0, 0, 0);
  if (box.rejected) return Ok();
  if (box.stop != Stop::kNone) return LimitError(file, box);
  if (rc != LUA_OK) {
    return MakeError(ErrorKind::kInvalidArgument, "lua step '" + file + "' failed: " + ErrorText(L), "script_error");
  }
  return Ok();
}

}  // namespace imgpipe
