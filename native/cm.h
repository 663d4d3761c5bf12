// rdma_cm: an event channel watched by a Poller (ref'd only while the JS side
// waits for something: a resolve, a connect, a listener) and CM ids.
// Events reach JS as plain objects; each CM id's JS object stays reachable
// from the channel until the id is destroyed, so events always find it.
#pragma once
#include <rdma/rdma_cma.h>
#include <napi.h>
#include <memory>
#include <set>

#include "util/poller.h"

#include "util/env.h"

namespace rdma {

class QueuePair;
class CmId;

class CmEventChannel : public Napi::ObjectWrap<CmEventChannel>, public Tracked {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  explicit CmEventChannel(const Napi::CallbackInfo& info);
  ~CmEventChannel() override;
  void ReleaseKernelObjects() override;

  rdma_event_channel* Get(Napi::Env env);
  static CmEventChannel* From(const Napi::Value& v, const char* name);
  void Track(CmId* id) { ids_.insert(id); }
  void Untrack(CmId* id) { ids_.erase(id); }

 private:
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value Ref(const Napi::CallbackInfo& info);
  Napi::Value Unref(const Napi::CallbackInfo& info);
  Napi::Value GetClosed(const Napi::CallbackInfo& info);
  void Drain();
  void Deliver(rdma_cm_event* ev);
  void Release();

  rdma_event_channel* ch_ = nullptr;
  Poller* poller_ = nullptr;
  Napi::FunctionReference on_event_;
  std::unique_ptr<Napi::AsyncContext> async_;
  std::set<CmId*> ids_;
};

class CmId : public Napi::ObjectWrap<CmId>, public Tracked {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  explicit CmId(const Napi::CallbackInfo& info);
  ~CmId() override;
  void ReleaseKernelObjects() override;

  rdma_cm_id* Get(Napi::Env env);
  static CmId* From(const Napi::Value& v, const char* name);
  void AttachQp(QueuePair* qp) { qp_ = qp; }
  // Destroys the id (and a QP created on it); safe to call twice.
  int Destroy();
  // The same without Node-API calls (its references stay until the finalizer).
  int DestroyId();
  // Its channel is going away (teardown) although the id could not be destroyed.
  void ForgetChannel() { channel_ = nullptr; }

 private:
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value BindAddr(const Napi::CallbackInfo& info);
  Napi::Value ResolveAddr(const Napi::CallbackInfo& info);
  Napi::Value ResolveRoute(const Napi::CallbackInfo& info);
  Napi::Value Listen(const Napi::CallbackInfo& info);
  Napi::Value Connect(const Napi::CallbackInfo& info);
  Napi::Value Accept(const Napi::CallbackInfo& info);
  Napi::Value Reject(const Napi::CallbackInfo& info);
  Napi::Value Disconnect(const Napi::CallbackInfo& info);
  Napi::Value GetInfo(const Napi::CallbackInfo& info);
  Napi::Value GetPortSpace(const Napi::CallbackInfo& info);
  Napi::Value GetClosed(const Napi::CallbackInfo& info);

  rdma_cm_id* id_ = nullptr;
  CmEventChannel* channel_ = nullptr;
  QueuePair* qp_ = nullptr;
  Napi::ObjectReference self_;     // strong while the id lives (see above)
  Napi::ObjectReference channel_obj_;
};

}  // namespace rdma
