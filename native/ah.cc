#include "ah.h"

#include <cerrno>

#include "pd.h"
#include "qp.h"
#include "util/errors.h"

namespace rdma {

static const napi_type_tag kAddressHandleTag = {0x6e6f64652d72646dULL, 0x000000000000100aULL};

void AddressHandle::Init(Napi::Env env, Napi::Object exports) {
  exports.Set("AddressHandle", DefineClass(env, "AddressHandle", {
      InstanceMethod<&AddressHandle::Close>("close"),
      InstanceAccessor<&AddressHandle::GetClosed>("closed"),
  }));
}

// new AddressHandle(pd, {dlid, sl, srcPathBits, staticRate, portNum, grh})
AddressHandle::AddressHandle(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<AddressHandle>(info), Tracked(info.Env(), Tracked::kOnPd) {
  Napi::Env env = info.Env();
  TagObject(info.This().As<Napi::Object>(), &kAddressHandleTag);
  ibv_pd* pd = ProtectionDomain::From(info[0], "pd")->Get(env);
  if (!info[1].IsObject()) ThrowType(env, "attr must be an object");
  ibv_ah_attr attr = {};
  ParseAh(info[1].As<Napi::Object>(), attr);
  errno = 0;
  ah_ = ibv_create_ah(pd, &attr);
  if (!ah_) Throw(env, "ibv_create_ah", errno ? errno : EINVAL);
  pd_ = Napi::Persistent(info[0].As<Napi::Object>());
}

AddressHandle::~AddressHandle() { ReleaseKernelObjects(); }

void AddressHandle::ReleaseKernelObjects() {
  if (ah_) ibv_destroy_ah(ah_);
  ah_ = nullptr;
}

ibv_ah* AddressHandle::Get(Napi::Env env) {
  if (!ah_) ThrowClosed(env, "AddressHandle");
  return ah_;
}

AddressHandle* AddressHandle::From(const Napi::Value& v, const char* name) {
  return UnwrapTagged<AddressHandle>(v, &kAddressHandleTag, name, "AddressHandle");
}

Napi::Value AddressHandle::Close(const Napi::CallbackInfo& info) {
  if (ah_) {
    int rc = ibv_destroy_ah(ah_);
    if (rc) Throw(info.Env(), "ibv_destroy_ah", rc);
    ah_ = nullptr;
    pd_.Reset();
  }
  return info.Env().Undefined();
}

Napi::Value AddressHandle::GetClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !ah_); }

}  // namespace rdma
