#include "util/env.h"

#include <algorithm>
#include <vector>

namespace rdma {

// The environment's cleanup hook: every tracked object still open is
// released, QPs first, device contexts last.
void TeardownEnv(void* arg) {
  auto* data = static_cast<EnvData*>(arg);
  std::vector<Tracked*> all(data->tracked.begin(), data->tracked.end());
  data->tracked.clear();
  std::stable_sort(all.begin(), all.end(), [](Tracked* a, Tracked* b) { return a->rank() < b->rank(); });
  for (Tracked* t : all) t->data_ = nullptr;  // their finalizers no longer touch the set
  for (Tracked* t : all) t->ReleaseKernelObjects();
}

EnvData& GetEnvData(Napi::Env env) {
  auto* data = env.GetInstanceData<EnvData>();
  if (!data) {
    data = new EnvData();
    env.SetInstanceData(data);  // deleted after the finalizers, when the environment goes
    // registered after node's own Node-API hook, so it runs before the
    // finalizers that hook schedules (cleanup hooks run newest first)
    napi_add_env_cleanup_hook(env, TeardownEnv, data);
  }
  return *data;
}

Tracked::Tracked(Napi::Env env, Rank rank) : data_(&GetEnvData(env)), rank_(rank) { data_->tracked.insert(this); }

Tracked::~Tracked() {
  if (data_) data_->tracked.erase(this);
}

}  // namespace rdma
