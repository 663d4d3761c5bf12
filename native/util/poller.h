// A uv_poll watcher on a non-blocking fd (completion channel, async events,
// rdma_cm event channel). The owner decides when it keeps the event loop
// alive: Ref() while something waits, Unref() when idle, so an idle verbs
// object never holds a process open.
#pragma once
#include <uv.h>
#include <napi.h>
#include <functional>
#include <vector>

namespace rdma {

class Poller {
 public:
  using Callback = std::function<void()>;
  // fd must already be O_NONBLOCK. Starts unref'd and stopped. The Poller
  // frees itself after Close(): it may be closed from inside its own callback.
  //
  // Environment teardown (a worker thread exiting, or the main thread) runs
  // before the owner's finalizer, and node unloads the addon after it: a uv
  // handle still open then would be closed later with a close callback in
  // unloaded code (a worker that exited with a CmId channel open crashed).
  // So each Poller holds an async cleanup hook: teardown closes the handle
  // and waits for the close callback; the owner's Close() may come later.
  static Poller* Create(Napi::Env env, int fd, Callback on_readable);
  Poller(const Poller&) = delete;
  Poller& operator=(const Poller&) = delete;

  void Start();   // watch for readability (idempotent)
  void Stop();    // stop watching (idempotent)
  void Ref();
  void Unref();
  bool active() const { return started_; }
  // Stops watching at once (the owner may close the fd right after) and
  // deletes this object from the uv close callback. Do not use it after.
  void Close();

 private:
  Poller(napi_env env, Callback cb) : env_(env), cb_(std::move(cb)) {}
  ~Poller() = default;
  static void OnPoll(uv_poll_t* h, int status, int events);
  static void OnEnvTeardown(napi_async_cleanup_hook_handle hook, void* arg);
  void CloseHandle();  // uv_close once; the close callback removes the hook
  uv_poll_t handle_;
  napi_env env_;
  napi_async_cleanup_hook_handle hook_ = nullptr;
  bool closing_ = false;         // uv_close called
  bool handle_closed_ = false;   // its close callback ran
  bool owner_released_ = false;  // Close() called: delete once the handle is closed too
  Callback cb_;
  bool started_ = false;
  bool refed_ = false;
};

// Sets O_NONBLOCK on fd; returns errno or 0.
int SetNonBlocking(int fd);

}  // namespace rdma

namespace rdma {
// Calls a JS function from a libuv callback (not from JS): opens a handle
// scope, runs it through MakeCallback so promises resolved inside settle
// (microtasks run), and turns a JS exception into an uncaught exception
// instead of a C++ exception escaping into libuv.
void CallFromLoop(Napi::Env env, const Napi::FunctionReference& fn, Napi::AsyncContext& ctx,
                  const std::vector<napi_value>& args);

// Reports an error raised in a libuv callback as an uncaught exception. When
// JS can no longer run (the environment is being torn down: node runs the
// loop once more after the last JS, and every Node-API call that needs JS
// then fails) the error is dropped: there is nobody left to tell.
void ReportFromLoop(napi_env env, const Napi::Error& err) noexcept;
}  // namespace rdma
