// CompletionQueue with its own completion channel. Completions reach JS in
// batches written into a Uint32Array the JS side owns (kWcStride words per
// completion), one JS call per batch. The channel fd is watched by a Poller
// only while started, and keeps the loop alive only while ref'd.
#pragma once
#include <infiniband/verbs.h>
#include <napi.h>
#include <memory>

#include "util/poller.h"

#include "util/env.h"

namespace rdma {

// wr_id lo, wr_id hi, status, opcode, vendor_err, byte_len, imm_data (or
// invalidated rkey), qp_num, src_qp, wc_flags
constexpr uint32_t kWcStride = 10;

class CompletionQueue : public Napi::ObjectWrap<CompletionQueue>, public Tracked {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  explicit CompletionQueue(const Napi::CallbackInfo& info);
  ~CompletionQueue() override;
  void ReleaseKernelObjects() override;

  ibv_cq* Get(Napi::Env env);
  static CompletionQueue* From(const Napi::Value& v, const char* name);

 private:
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Poll(const Napi::CallbackInfo& info);
  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value Stop(const Napi::CallbackInfo& info);
  Napi::Value Ref(const Napi::CallbackInfo& info);
  Napi::Value Unref(const Napi::CallbackInfo& info);
  Napi::Value Spin(const Napi::CallbackInfo& info);
  Napi::Value Idle(const Napi::CallbackInfo& info);
  Napi::Value GetHandle(const Napi::CallbackInfo& info);
  Napi::Value GetCqe(const Napi::CallbackInfo& info);
  Napi::Value GetClosed(const Napi::CallbackInfo& info);
  int PollInto();  // fills the JS buffer; returns count or -errno
  void OnReadable();
  void DrainEvents();  // reads (and acks in batches) the channel's pending events
  void ChannelFailed(Napi::Env env, int err);
  void Release();

  ibv_cq* cq_ = nullptr;
  ibv_comp_channel* channel_ = nullptr;
  unsigned unacked_ = 0;
  Poller* poller_ = nullptr;
  Napi::Reference<Napi::Uint32Array> wc_buf_;
  uint32_t* wc_data_ = nullptr;
  uint32_t wc_cap_ = 0;
  Napi::FunctionReference on_batch_;
  std::unique_ptr<Napi::AsyncContext> async_;
  Napi::ObjectReference context_;
};

}  // namespace rdma
