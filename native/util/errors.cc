#include "util/errors.h"

#include "util/env.h"

#include <cerrno>
#include <cmath>
#include <cstring>

namespace rdma {

namespace {
const char* ErrnoName(int err) {
  switch (err) {
#define E(x) case x: return #x;
    E(EPERM) E(ENOENT) E(ESRCH) E(EINTR) E(EIO) E(ENXIO) E(E2BIG) E(EBADF) E(EAGAIN)
    E(ENOMEM) E(EACCES) E(EFAULT) E(EBUSY) E(EEXIST) E(ENODEV) E(ENOTDIR) E(EINVAL)
    E(ENFILE) E(EMFILE) E(ENOSPC) E(ESPIPE) E(EROFS) E(EPIPE) E(ERANGE) E(ENOSYS)
    E(ENODATA) E(ETIME) E(ENOLINK) E(EPROTO) E(EBADMSG) E(EOVERFLOW) E(EOPNOTSUPP)
    E(EADDRINUSE) E(EADDRNOTAVAIL) E(ENETDOWN) E(ENETUNREACH) E(ECONNABORTED)
    E(ECONNRESET) E(ENOBUFS) E(EISCONN) E(ENOTCONN) E(ETIMEDOUT) E(ECONNREFUSED)
    E(EHOSTUNREACH) E(EALREADY) E(EINPROGRESS) E(ECANCELED) E(EPROTONOSUPPORT)
    E(EAFNOSUPPORT) E(EREMOTEIO)
#undef E
    default: return nullptr;
  }
}
}  // namespace

void SetErrorClass(Napi::Env env, Napi::Function ctor) {
  // one constructor per environment (workers get their own)
  GetEnvData(env).error_class = Napi::Persistent(ctor);
}

// An RdmaError (this environment's class) with `msg`; a plain Error before lib/native.ts set the class.
static Napi::Object NewRdmaError(Napi::Env env, const std::string& msg) {
  const Napi::FunctionReference& ctor = GetEnvData(env).error_class;
  return ctor.IsEmpty() ? Napi::Error::New(env, msg).Value() : ctor.New({Napi::String::New(env, msg)});
}

Napi::Error MakeError(Napi::Env env, const char* verb, int err, const std::string& detail) {
  if (err < 0) err = -err;
  const char* name = ErrnoName(err);
  std::string code = name ? name : ("ERRNO_" + std::to_string(err));
  std::string msg = std::string(verb) + " failed: " + code + " (" + std::strerror(err) + ")";
  if (!detail.empty()) msg += ": " + detail;
  Napi::Object obj = NewRdmaError(env, msg);
  obj.Set("code", code);
  obj.Set("errno", Napi::Number::New(env, err));
  obj.Set("syscall", verb);
  return Napi::Error(env, obj);
}

void Throw(Napi::Env env, const char* verb, int err, const std::string& detail) {
  throw MakeError(env, verb, err, detail);
}

void ThrowType(Napi::Env env, const std::string& msg) { throw Napi::TypeError::New(env, msg); }
void ThrowRange(Napi::Env env, const std::string& msg) { throw Napi::RangeError::New(env, msg); }

void ThrowClosed(Napi::Env env, const char* what) {
  Napi::Object obj = NewRdmaError(env, std::string(what) + " is closed");
  obj.Set("code", "ECLOSED");
  throw Napi::Error(env, obj);
}

uint32_t ArgU32(const Napi::Value& v, const char* name) {
  if (!v.IsNumber()) ThrowType(v.Env(), std::string(name) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 4294967295.0) || std::floor(d) != d)
    ThrowRange(v.Env(), std::string(name) + " must be an integer from 0 to 2^32-1, got " + std::to_string(d));
  return static_cast<uint32_t>(d);
}

int32_t ArgI32(const Napi::Value& v, const char* name) {
  if (!v.IsNumber()) ThrowType(v.Env(), std::string(name) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= -2147483648.0 && d <= 2147483647.0) || std::floor(d) != d)
    ThrowRange(v.Env(), std::string(name) + " must be a 32-bit integer");
  return static_cast<int32_t>(d);
}

uint64_t ArgU64(const Napi::Value& v, const char* name) {
  if (v.IsBigInt()) {
    bool lossless = false;
    uint64_t r = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) ThrowRange(v.Env(), std::string(name) + " must fit in 64 bits");
    return r;
  }
  if (!v.IsNumber()) ThrowType(v.Env(), std::string(name) + " must be a number or bigint");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 9007199254740991.0) || std::floor(d) != d)
    ThrowRange(v.Env(), std::string(name) + " must be a non-negative safe integer");
  return static_cast<uint64_t>(d);
}

bool ArgBool(const Napi::Value& v, const char* name) {
  if (!v.IsBoolean()) ThrowType(v.Env(), std::string(name) + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

std::string ArgString(const Napi::Value& v, const char* name) {
  if (!v.IsString()) ThrowType(v.Env(), std::string(name) + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

}  // namespace rdma

namespace rdma {
void TagObject(Napi::Object obj, const napi_type_tag* tag) {
  napi_status st = napi_type_tag_object(obj.Env(), obj, tag);
  if (st != napi_ok) ThrowType(obj.Env(), "cannot tag native object");
}
}  // namespace rdma
