#include "util/poller.h"

#include <fcntl.h>
#include <cerrno>

#include "util/errors.h"

namespace rdma {

int SetNonBlocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return errno;
  if (fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return errno;
  return 0;
}

Poller* Poller::Create(Napi::Env env, int fd, Callback on_readable) {
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || !loop) Throw(env, "napi_get_uv_event_loop", EINVAL);
  auto* p = new Poller(env, std::move(on_readable));
  int rc = uv_poll_init(loop, &p->handle_, fd);
  if (rc != 0) {
    delete p;
    Throw(env, "uv_poll_init", -rc);
  }
  p->handle_.data = p;
  uv_unref(reinterpret_cast<uv_handle_t*>(&p->handle_));
  if (napi_add_async_cleanup_hook(env, OnEnvTeardown, p, &p->hook_) != napi_ok) {
    p->owner_released_ = true;
    p->CloseHandle();  // deletes p from the close callback
    Throw(env, "napi_add_async_cleanup_hook", EINVAL);
  }
  return p;
}

void Poller::OnEnvTeardown(napi_async_cleanup_hook_handle, void* arg) {
  static_cast<Poller*>(arg)->CloseHandle();
}

void Poller::CloseHandle() {
  if (closing_) return;
  Stop();
  closing_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&handle_), [](uv_handle_t* h) {
    auto* self = static_cast<Poller*>(h->data);
    self->handle_closed_ = true;
    // the environment may now finish its teardown (and unload the addon)
    if (self->hook_) napi_remove_async_cleanup_hook(self->hook_);
    self->hook_ = nullptr;
    if (self->owner_released_) delete self;
  });
}

void Poller::Start() {
  if (closing_ || started_) return;
  uv_poll_start(&handle_, UV_READABLE, OnPoll);
  started_ = true;
}

void Poller::Stop() {
  if (closing_ || !started_) return;
  uv_poll_stop(&handle_);
  started_ = false;
}

void Poller::Ref() {
  if (closing_ || refed_) return;
  uv_ref(reinterpret_cast<uv_handle_t*>(&handle_));
  refed_ = true;
}

void Poller::Unref() {
  if (closing_ || !refed_) return;
  uv_unref(reinterpret_cast<uv_handle_t*>(&handle_));
  refed_ = false;
}

void Poller::Close() {
  if (owner_released_) return;
  owner_released_ = true;
  if (handle_closed_) delete this;  // the environment's teardown closed it already
  else CloseHandle();
}

void Poller::OnPoll(uv_poll_t* h, int status, int events) {
  auto* self = static_cast<Poller*>(h->data);
  if (self->closing_) return;
  // errors (e.g. EBADF after a device removal) are reported as readable so
  // the owner drains and sees the verb's own error.
  // Nothing may propagate into libuv: a C++ exception there is
  // std::terminate (exit 134), e.g. when an event arrives after the last JS
  // ran and the owner's Node-API calls fail
  napi_env env = self->env_;
  try {
    self->cb_();
  } catch (const Napi::Error& e) {
    ReportFromLoop(env, e);
  } catch (const std::exception& e) {
    try {
      ReportFromLoop(env, Napi::Error::New(env, std::string("node-rdma: ") + e.what()));
    } catch (...) {
    }
  } catch (...) {
  }
}

}  // namespace rdma

namespace rdma {
void CallFromLoop(Napi::Env env, const Napi::FunctionReference& fn, Napi::AsyncContext& ctx,
                  const std::vector<napi_value>& args) {
  Napi::HandleScope scope(env);
  // a weak reference's function may already be collected (its owner is
  // being finalized): then there is nobody left to call
  Napi::Function f = fn.Value();
  if (f.IsEmpty()) return;
  try {
    f.MakeCallback(env.Global(), args, ctx);
  } catch (const Napi::Error& e) {
    ReportFromLoop(env, e);
  }
}

void ReportFromLoop(napi_env env, const Napi::Error& err) noexcept {
  try {
    Napi::HandleScope scope(env);
    napi_value v = err.Value();
    // napi_fatal_exception refuses (napi_pending_exception) once JS cannot
    // run: then the error is dropped quietly
    if (v) napi_fatal_exception(env, v);
  } catch (...) {
  }
}
}  // namespace rdma
