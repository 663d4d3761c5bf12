/*
 * floor — the no-JavaScript floor of node-rdma's benchmarks: the same RDMA
 * messages as the JS benchmarks, posted and reaped by C, so that the run
 * can tell what the device costs from what node-rdma costs.
 *
 * perftest is the reference the targets name, but it does not send what
 * node-rdma sends: ib_write_lat detects arrival by polling memory (no
 * receive, no completion at the receiver) and ib_write_bw posts no receive
 * and gets no completion at the target. This program sends exactly what
 * bench/verbs.ts and the transport send, with nothing else around it:
 *
 *   floor lat -d rxe0 -x 1 [-s 2] [-n 1000] [-w 5000] [-b 8] [-e 1]
 *       WRITE_WITH_IMM ping-pong (bench/verbs.ts latency): every message
 *       consumes a receive and completes at both ends; receives replaced -b
 *       at a time (8, as the bench's --recv-batch), one send in -e signaled
 *       (1, as the bench); one-way latency = round trip / 2, like ib_write_lat;
 *       -W NS: spin NS between a message and its reply at both ends (what a
 *       binding's own per-hop work costs on this device)
 *   floor cpu
 *       no RDMA: an LCG filling 1 MiB, best of 20 (bench/run.ts runs the
 *       same loop in JS: the machine's JS/C cost ratio for plain code)
 *   floor io -d rxe0 -x 1 [-s 4096] [-q 32] [-t 3] [-r 50] [-b 1] [-e 1]
 *       the transport's IO (docs/protocol.md): a write is one
 *       WRITE_WITH_IMM of the data into a server chunk and a zero-length
 *       WRITE_WITH_IMM back; a read is a small WRITE_WITH_IMM request, then
 *       an RDMA WRITE of the data and the zero-length WRITE_WITH_IMM
 *       response in one post; -q IOs in flight, -r percent reads; IOPS
 *       and per-IO latency over -t seconds after a 1 s warm-up; like the
 *       transport, every send signaled and every receive replaced at once
 *
 * The IO floor is the two-message IO with nothing around it: no
 * window bound on the client per read (S1: the transport's reads bind one
 * and the response invalidates it), no re-keying (strict mode), responses
 * as zero-length WRITE_WITH_IMM (the transport answers with a small SEND
 * when there is a header, a key or a window to invalidate). It bounds what
 * any implementation of this IO can reach on the device, not strict mode's.
 *
 * Client and server are two threads of this process, each busy-polling its
 * own CQ (as perftest does), on two RC QPs connected by hand through the
 * device's GID -x; -c puts them on two given CPUs. One JSON line on stdout. Built by scripts/setup (npm test, npm run bench).
 */
#define _GNU_SOURCE
#include <infiniband/verbs.h>
#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCH 32
#define READ_BIT 0x80000000u

static void die(const char *what, int err) {
  fprintf(stderr, "floor: %s: %s\n", what, strerror(err));
  exit(1);
}

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

struct opts {
  const char *mode, *device;
  int gid_index, size, iters, warmup, depth, seconds, read_pct, recv_batch, signal_every;
  int client_cpu, server_cpu; /* -c: pin the two ends' threads (-1: not pinned) */
  int work_ns;                 /* -W: lat only, CPU work per hop between the receive and the reply */
};

/* One end: its CQ, QP and registered memory, and how to reach the peer's. */
struct end {
  struct ibv_cq *cq;
  struct ibv_qp *qp;
  struct ibv_mr *mr;
  char *mem;
  size_t len;
  uint64_t peer_addr;
  uint32_t peer_rkey;
  uint32_t sends; /* for selective signaling */
  int recv_owed;  /* receives consumed, not yet replaced */
};

static struct opts o;
static struct ibv_context *ctx;
static struct ibv_pd *pd;
static union ibv_gid gid;
static enum ibv_mtu mtu;

static void make_end(struct end *e, size_t len, int depth) {
  e->len = len;
  if (posix_memalign((void **)&e->mem, 4096, len)) die("posix_memalign", ENOMEM);
  memset(e->mem, 0, len);
  e->mr = ibv_reg_mr(pd, e->mem, len, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
  if (!e->mr) die("ibv_reg_mr", errno);
  e->cq = ibv_create_cq(ctx, 8 * depth + 64, NULL, NULL, 0);
  if (!e->cq) die("ibv_create_cq", errno);
  struct ibv_qp_init_attr ia = {
    .send_cq = e->cq, .recv_cq = e->cq, .qp_type = IBV_QPT_RC,
    .cap = { .max_send_wr = 4 * depth + 2 * o.signal_every + 8, .max_recv_wr = 2 * depth + 2 * MAX_BATCH,
             .max_send_sge = 1, .max_recv_sge = 1, .max_inline_data = 64 },
  };
  e->qp = ibv_create_qp(pd, &ia);
  if (!e->qp) die("ibv_create_qp", errno);
}

static void connect_to(struct end *e, uint32_t qpn, int gid_index) {
  struct ibv_qp_attr a = { .qp_state = IBV_QPS_INIT, .port_num = 1,
                           .qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE };
  int rc = ibv_modify_qp(e->qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
  if (rc) die("ibv_modify_qp INIT", rc);
  memset(&a, 0, sizeof a);
  a.qp_state = IBV_QPS_RTR;
  a.path_mtu = mtu;
  a.dest_qp_num = qpn;
  a.max_dest_rd_atomic = 1;
  a.min_rnr_timer = 12;
  a.ah_attr.is_global = 1;
  a.ah_attr.grh.dgid = gid;
  a.ah_attr.grh.sgid_index = gid_index;
  a.ah_attr.grh.hop_limit = 1;
  a.ah_attr.port_num = 1;
  rc = ibv_modify_qp(e->qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                                    IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
  if (rc) die("ibv_modify_qp RTR", rc);
  memset(&a, 0, sizeof a);
  a.qp_state = IBV_QPS_RTS;
  a.timeout = 14;
  a.retry_cnt = 7;
  a.rnr_retry = 7;
  a.max_rd_atomic = 1;
  rc = ibv_modify_qp(e->qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
                                    IBV_QP_MAX_QP_RD_ATOMIC);
  if (rc) die("ibv_modify_qp RTS", rc);
}

static void post_recvs(struct end *e, int n) {
  struct ibv_recv_wr wrs[64], *bad;
  while (n > 0) {
    int k = n < 64 ? n : 64;
    for (int i = 0; i < k; i++) wrs[i] = (struct ibv_recv_wr){ .wr_id = 0, .next = i + 1 < k ? &wrs[i + 1] : NULL };
    int rc = ibv_post_recv(e->qp, wrs, &bad);
    if (rc) die("ibv_post_recv", rc);
    n -= k;
  }
}

/* A receive was consumed: replace them recv_batch at a time, in one post. */
static void recv_used(struct end *e) {
  if (++e->recv_owed < o.recv_batch) return;
  post_recvs(e, e->recv_owed);
  e->recv_owed = 0;
}

/* WRITE_WITH_IMM of [off, off+len) of this end's memory to the peer at peer_off (len 0: no data). */
static void write_imm(struct end *e, size_t off, uint32_t len, size_t peer_off, uint32_t imm, struct ibv_send_wr *before) {
  struct ibv_sge sge = { .addr = (uintptr_t)e->mem + off, .length = len, .lkey = e->mr->lkey };
  struct ibv_send_wr wr = {
    .opcode = IBV_WR_RDMA_WRITE_WITH_IMM, .sg_list = &sge, .num_sge = len ? 1 : 0, .imm_data = htobe32(imm),
    .send_flags = (len <= 64 ? IBV_SEND_INLINE : 0) | (++e->sends % o.signal_every == 0 ? IBV_SEND_SIGNALED : 0),
    .wr = { .rdma = { .remote_addr = e->peer_addr + peer_off, .rkey = e->peer_rkey } },
  }, *bad;
  if (before) before->next = &wr;
  int rc = ibv_post_send(e->qp, before ? before : &wr, &bad);
  if (rc) die("ibv_post_send", rc);
}

/* Busy-polls until a receive completes; returns its immediate. Send completions are only checked. */
static uint32_t wait_recv(struct end *e, const atomic_int *stop) {
  struct ibv_wc wc;
  for (;;) {
    int n = ibv_poll_cq(e->cq, 1, &wc);
    if (n < 0) die("ibv_poll_cq", -n);
    if (n == 0) {
      if (stop && atomic_load_explicit(stop, memory_order_relaxed)) return UINT32_MAX;
      continue;
    }
    if (wc.status != IBV_WC_SUCCESS) {
      fprintf(stderr, "floor: completion %s\n", ibv_wc_status_str(wc.status));
      exit(1);
    }
    if (wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
      recv_used(e);
      return be32toh(wc.imm_data);
    }
  }
}

static struct end cli, srv;
static atomic_int stop;

/* Puts the calling thread on `cpu` (the ends of bench/run.ts's benchmarks are pinned the same way). */
static void pin(int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  int rc = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
  if (rc) die("pthread_setaffinity_np", rc);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* ---- lat: the WRITE_WITH_IMM ping-pong ---- */

/*
 * -W: spins for work_ns between seeing a message and posting the reply, at
 * both ends: what a binding adds per hop (a JS binding's two Node-API calls
 * and the code around them), measured with the device's own behaviour.
 */
static void hop_work(void) {
  if (o.work_ns <= 0) return;
  uint64_t until = now_ns() + (uint64_t)o.work_ns;
  while (now_ns() < until) {}
}

static void *lat_server(void *arg) {
  (void)arg;
  pin(o.server_cpu);
  for (int i = 0; i < o.warmup + o.iters; i++) {
    wait_recv(&srv, NULL);
    hop_work();
    write_imm(&srv, 0, o.size, 0, i, NULL);
  }
  return NULL;
}

static void run_lat(void) {
  pthread_t t;
  uint64_t *rtt = malloc(sizeof(uint64_t) * o.iters);
  pthread_create(&t, NULL, lat_server, NULL);
  for (int i = 0; i < o.warmup + o.iters; i++) {
    uint64_t t0 = now_ns();
    if (i > 0) hop_work(); /* the reply to the previous round trip */
    write_imm(&cli, 0, o.size, 0, i, NULL);
    wait_recv(&cli, NULL);
    if (i >= o.warmup) rtt[i - o.warmup] = now_ns() - t0;
  }
  pthread_join(t, NULL);
  qsort(rtt, o.iters, sizeof *rtt, cmp_u64);
  double sum = 0;
  for (int i = 0; i < o.iters; i++) sum += rtt[i];
  printf("{\"bench\":\"floor_write_imm_lat\",\"device\":\"%s\",\"size\":%d,\"iters\":%d,\"warmup\":%d,"
         "\"recv_batch\":%d,\"signal_every\":%d,\"work_ns\":%d,\"t_min_usec\":%.2f,\"t_typical_usec\":%.2f,\"t_avg_usec\":%.2f,\"t_p99_usec\":%.2f}\n",
         o.device, o.size, o.iters, o.warmup, o.recv_batch, o.signal_every, o.work_ns, rtt[0] / 2e3, rtt[o.iters / 2] / 2e3, sum / o.iters / 2e3,
         rtt[(int)(o.iters * 0.99)] / 2e3);
  free(rtt);
}

/* ---- io: the transport's two-message IO ---- */

/* server chunk i: [data (size) | request (64)]; client buffer i: [data (size) | request (64)] */
#define SLOT(o) ((size_t)(o).size + 64)

static void *io_server(void *arg) {
  (void)arg;
  pin(o.server_cpu);
  for (;;) {
    uint32_t imm = wait_recv(&srv, &stop);
    if (imm == UINT32_MAX) return NULL;
    uint32_t i = imm & ~READ_BIT;
    if (imm & READ_BIT) {
      /* the request names the client's buffer (here: its offset) */
      uint64_t dst;
      memcpy(&dst, srv.mem + i * SLOT(o) + o.size, sizeof dst);
      struct ibv_sge sge = { .addr = (uintptr_t)srv.mem + i * SLOT(o), .length = o.size, .lkey = srv.mr->lkey };
      struct ibv_send_wr data = {
        .opcode = IBV_WR_RDMA_WRITE, .sg_list = &sge, .num_sge = 1,
        .send_flags = ++srv.sends % o.signal_every == 0 ? IBV_SEND_SIGNALED : 0,
        .wr = { .rdma = { .remote_addr = srv.peer_addr + dst, .rkey = srv.peer_rkey } },
      };
      write_imm(&srv, 0, 0, 0, imm, &data);
    } else {
      write_imm(&srv, 0, 0, 0, imm, NULL);
    }
  }
}

static uint32_t rnd = 2463534242u;
static uint32_t xorshift(void) {
  rnd ^= rnd << 13;
  rnd ^= rnd >> 17;
  rnd ^= rnd << 5;
  return rnd;
}

static void post_io(uint32_t i) {
  if ((int)(xorshift() % 100) < o.read_pct) {
    uint64_t dst = i * SLOT(o);
    memcpy(cli.mem + i * SLOT(o) + o.size, &dst, sizeof dst);
    write_imm(&cli, i * SLOT(o) + o.size, 32, i * SLOT(o) + o.size, i | READ_BIT, NULL);
  } else {
    write_imm(&cli, i * SLOT(o), o.size, i * SLOT(o), i, NULL);
  }
}

static void run_io(void) {
  pthread_t t;
  pthread_create(&t, NULL, io_server, NULL);
  uint64_t *start = calloc(o.depth, sizeof(uint64_t));
  size_t cap = 1 << 22, nlat = 0;
  uint64_t *lat = malloc(cap * sizeof(uint64_t));
  for (int i = 0; i < o.depth; i++) {
    start[i] = now_ns();
    post_io(i);
  }
  uint64_t t0 = now_ns(), measure_from = t0 + 1000000000u, until = measure_from + (uint64_t)o.seconds * 1000000000u;
  uint64_t ios = 0, inflight = o.depth;
  while (inflight) {
    uint32_t i = wait_recv(&cli, NULL) & ~READ_BIT;
    uint64_t now = now_ns();
    inflight--;
    if (now >= measure_from && now < until) {
      ios++;
      if (nlat < cap) lat[nlat++] = now - start[i];
    }
    if (now < until) {
      start[i] = now;
      post_io(i);
      inflight++;
    }
  }
  atomic_store(&stop, 1);
  pthread_join(t, NULL);
  qsort(lat, nlat, sizeof *lat, cmp_u64);
  printf("{\"bench\":\"floor_io\",\"device\":\"%s\",\"size\":%d,\"depth\":%d,\"read_pct\":%d,\"seconds\":%d,"
         "\"recv_batch\":%d,\"signal_every\":%d,\"ios\":%llu,\"iops\":%.1f,\"p50_usec\":%.1f,\"p99_usec\":%.1f}\n",
         o.device, o.size, o.depth, o.read_pct, o.seconds, o.recv_batch, o.signal_every, (unsigned long long)ios, ios / (double)o.seconds,
         nlat ? lat[nlat / 2] / 1e3 : 0, nlat ? lat[(size_t)(nlat * 0.99)] / 1e3 : 0);
  free(lat);
  free(start);
}

static int num(const char *v, const char *name, int lo, int hi) {
  char *end;
  long x = v ? strtol(v, &end, 10) : 0;
  if (!v || *end || x < lo || x > hi) {
    fprintf(stderr, "floor: %s must be an integer from %d to %d\n", name, lo, hi);
    exit(2);
  }
  return (int)x;
}

/*
 * floor cpu: the same byte loop as bench/run.ts's JS one (an LCG filling
 * 1 MiB), best of 20 runs. Not RDMA: what one machine charges compiled C
 * against V8's code for the same work, so that the JS/C ratios of the other
 * figures can be read on that machine (under qemu TCG every guest
 * instruction is translated, and V8's extra instructions cost what
 * hardware hides).
 */
static int cpu_mode(void) {
  size_t n = 1 << 20;
  volatile uint8_t *b = malloc(n);
  if (!b) die("malloc", ENOMEM);
  uint32_t h = 2166136261u;
  double best = 1e18;
  for (int r = 0; r < 20; r++) {
    uint64_t t = now_ns();
    for (size_t i = 0; i < n; i++) {
      h = h * 1103515245u + 12345u;
      b[i] = (uint8_t)(h >> 24);
    }
    double d = (double)(now_ns() - t) / 1000.0;
    if (d < best) best = d;
  }
  printf("{\"bench\":\"floor_cpu\",\"lcg_fill_1mib_usec\":%.1f,\"check\":%u}\n", best, (unsigned)b[n / 2]);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "cpu")) return cpu_mode();
  o = (struct opts){ .device = "rxe0", .gid_index = 1, .size = -1, .iters = 1000, .warmup = 5000, .depth = 32,
                     .seconds = 3, .read_pct = 50, .recv_batch = -1, .signal_every = 1, .client_cpu = -1, .server_cpu = -1 };
  if (argc < 2 || (strcmp(argv[1], "lat") && strcmp(argv[1], "io"))) {
    fprintf(stderr, "usage: floor cpu | floor lat|io -d DEVICE -x GID_INDEX [-s SIZE] [-n ITERS] [-w WARMUP] [-q DEPTH] [-t SECONDS] [-r READ_PCT] [-b RECV_BATCH] [-e SIGNAL_EVERY] [-c CLIENT_CPU,SERVER_CPU] [-W WORK_NS]\n");
    return 2;
  }
  o.mode = argv[1];
  for (int i = 2; i < argc; i += 2) {
    const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(k, "-d") && v) o.device = v;
    else if (!strcmp(k, "-x")) o.gid_index = num(v, "-x", 0, 255);
    else if (!strcmp(k, "-s")) o.size = num(v, "-s", 0, 1 << 20);
    else if (!strcmp(k, "-n")) o.iters = num(v, "-n", 1, 10000000);
    else if (!strcmp(k, "-w")) o.warmup = num(v, "-w", 0, 10000000);
    else if (!strcmp(k, "-q")) o.depth = num(v, "-q", 1, 1024);
    else if (!strcmp(k, "-t")) o.seconds = num(v, "-t", 1, 3600);
    else if (!strcmp(k, "-r")) o.read_pct = num(v, "-r", 0, 100);
    else if (!strcmp(k, "-b")) o.recv_batch = num(v, "-b", 1, MAX_BATCH);
    else if (!strcmp(k, "-e")) o.signal_every = num(v, "-e", 1, 64);
    else if (!strcmp(k, "-W")) o.work_ns = num(v, "-W", 0, 1000000);
    else if (!strcmp(k, "-c")) {
      if (!v || sscanf(v, "%d,%d", &o.client_cpu, &o.server_cpu) != 2 || o.client_cpu < 0 || o.server_cpu < 0) {
        fprintf(stderr, "floor: -c is CLIENT_CPU,SERVER_CPU\n");
        return 2;
      }
    }
    else {
      fprintf(stderr, "floor: unknown argument %s\n", k);
      return 2;
    }
  }
  int lat = !strcmp(o.mode, "lat");
  if (o.size < 0) o.size = lat ? 2 : 4096;
  if (o.recv_batch < 0) o.recv_batch = lat ? 8 : 1;
  if (lat) o.depth = 1;

  int n;
  struct ibv_device **list = ibv_get_device_list(&n), *dev = NULL;
  for (int i = 0; list && i < n; i++)
    if (!strcmp(ibv_get_device_name(list[i]), o.device)) dev = list[i];
  if (!dev) die(o.device, ENODEV);
  ctx = ibv_open_device(dev);
  if (!ctx) die("ibv_open_device", errno);
  ibv_free_device_list(list);
  pd = ibv_alloc_pd(ctx);
  if (!pd) die("ibv_alloc_pd", errno);
  int rc = ibv_query_gid(ctx, 1, o.gid_index, &gid);
  if (rc) die("ibv_query_gid", rc);
  struct ibv_port_attr pa;
  rc = ibv_query_port(ctx, 1, &pa);
  if (rc) die("ibv_query_port", rc);
  mtu = pa.active_mtu;

  size_t len = lat ? 4096 + (size_t)o.size : (size_t)o.depth * SLOT(o);
  make_end(&cli, len, o.depth);
  make_end(&srv, len, o.depth);
  cli.peer_addr = (uintptr_t)srv.mem;
  cli.peer_rkey = srv.mr->rkey;
  srv.peer_addr = (uintptr_t)cli.mem;
  srv.peer_rkey = cli.mr->rkey;
  connect_to(&cli, srv.qp->qp_num, o.gid_index);
  connect_to(&srv, cli.qp->qp_num, o.gid_index);
  post_recvs(&cli, 2 * o.depth + o.recv_batch);
  post_recvs(&srv, 2 * o.depth + o.recv_batch);
  pin(o.client_cpu);
  if (lat) run_lat();
  else run_io();
  ibv_destroy_qp(cli.qp);
  ibv_destroy_qp(srv.qp);
  ibv_destroy_cq(cli.cq);
  ibv_destroy_cq(srv.cq);
  ibv_dereg_mr(cli.mr);
  ibv_dereg_mr(srv.mr);
  ibv_dealloc_pd(pd);
  ibv_close_device(ctx);
  free(cli.mem);
  free(srv.mem);
  return 0;
}
