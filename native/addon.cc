// node-rdma's addon: registers every verbs object. lib/native.ts is the only
// JS file that loads it.
#include <napi.h>

#include "ah.h"
#include "cm.h"
#include "context.h"
#include "cq.h"
#include "device.h"
#include "memory.h"
#include "mr.h"
#include "mw.h"
#include "pd.h"
#include "qp.h"
#include "srq.h"
#include "p2pmem.h"
#include "util/errors.h"

namespace rdma {

// setErrorClass(RdmaError): native errors are instances of the JS class.
static Napi::Value SetErrorClassJs(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction()) ThrowType(info.Env(), "RdmaError must be a function");
  SetErrorClass(info.Env(), info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClassJs, "setErrorClass"));
  InitDevice(env, exports);
  Context::Init(env, exports);
  ProtectionDomain::Init(env, exports);
  InitMemory(env, exports);
  MemoryRegion::Init(env, exports);
  MemoryWindow::Init(env, exports);
  AddressHandle::Init(env, exports);
  CompletionQueue::Init(env, exports);
  QueuePair::Init(env, exports);
  SharedReceiveQueue::Init(env, exports);
  CmEventChannel::Init(env, exports);
  CmId::Init(env, exports);
  InitP2pmem(env, exports);
  return exports;
}

}  // namespace rdma

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return rdma::Init(env, exports); }

NODE_API_MODULE(node_rdma, InitAddon)
