{
  "targets": [
    {
      "target_name": "node_rdma",
      "sources": [
        "native/addon.cc",
        "native/util/errors.cc",
        "native/util/env.cc",
        "native/util/poller.cc",
        "native/device.cc",
        "native/context.cc",
        "native/pd.cc",
        "native/memory.cc",
        "native/mr.cc",
        "native/mw.cc",
        "native/ah.cc",
        "native/cq.cc",
        "native/qp.cc",
        "native/qp_packed.cc",
        "native/srq.cc",
        "native/cm.cc",
        "native/p2pmem.cc"
      ],
      "include_dirs": [
        "<!@(node -p \"require('node-addon-api').include\")",
        "native"
      ],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-missing-field-initializers", "-Wno-unused-parameter"],
      "cflags_cc!": ["-fno-exceptions"],
      # _ALL: any C++ exception (std::bad_alloc, ...) reaching the addon boundary
      # becomes a JS error instead of std::terminate
      "defines": ["NAPI_VERSION=9", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_CPP_EXCEPTIONS_ALL"],
      "libraries": ["<!@(pkg-config --libs libibverbs librdmacm)"],
      "conditions": [
        ["OS!='linux'", { "type": "none" }],
        ["'<!(echo $NODE_RDMA_SANITIZE)'=='1'", {
          "cflags_cc": ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"],
          "ldflags": ["-fsanitize=address,undefined"]
        }]
      ]
    }
  ]
}
