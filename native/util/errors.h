// Errors thrown into JS. Every failing verb becomes an RdmaError carrying the
// POSIX code ('EINVAL'), the errno and the verb's name (`syscall`), so callers
// can branch on `code` instead of parsing messages. rdma-core has three error
// conventions (NULL + errno, a returned errno, -1 + errno): the helpers below
// take the errno explicitly so each call site states which one applies.
#pragma once
#include <napi.h>
#include <string>

namespace rdma {

// Builds (does not throw) an RdmaError for `verb` failing with `err`.
Napi::Error MakeError(Napi::Env env, const char* verb, int err, const std::string& detail = "");

// Throws the RdmaError as a C++ exception (caught by node-addon-api at the
// boundary and rethrown into JS).
[[noreturn]] void Throw(Napi::Env env, const char* verb, int err, const std::string& detail = "");

// Throws a TypeError / RangeError naming the bad argument.
[[noreturn]] void ThrowType(Napi::Env env, const std::string& msg);
[[noreturn]] void ThrowRange(Napi::Env env, const std::string& msg);

// Throws RdmaError code 'ECLOSED' for use of a closed object.
[[noreturn]] void ThrowClosed(Napi::Env env, const char* what);

// Stores the JS RdmaError constructor (set once from lib/native.ts).
void SetErrorClass(Napi::Env env, Napi::Function ctor);

// Argument readers that throw TypeError/RangeError naming the argument.
uint32_t ArgU32(const Napi::Value& v, const char* name);
int32_t ArgI32(const Napi::Value& v, const char* name);
uint64_t ArgU64(const Napi::Value& v, const char* name);  // number or bigint
bool ArgBool(const Napi::Value& v, const char* name);
std::string ArgString(const Napi::Value& v, const char* name);

}  // namespace rdma

namespace rdma {
// Type tags let From() refuse a JS object that is not the expected native
// class (napi_unwrap would fail with a bare "Invalid argument"), even across
// realms.
void TagObject(Napi::Object obj, const napi_type_tag* tag);
// Unwraps `v` as T when it carries `tag`; else a TypeError naming `name`.
template <typename T>
T* UnwrapTagged(const Napi::Value& v, const napi_type_tag* tag, const char* name, const char* cls) {
  bool ok = false;
  if (v.IsObject()) napi_check_object_type_tag(v.Env(), v, tag, &ok);
  if (!ok) ThrowType(v.Env(), std::string(name) + " must be a " + cls);
  return Napi::ObjectWrap<T>::Unwrap(v.As<Napi::Object>());
}
}  // namespace rdma
