/**
 * Verbs constants, with the C names kept (IBV_ACCESS_LOCAL_WRITE ->
 * Access.LOCAL_WRITE) and the numeric values of <infiniband/verbs.h>.
 */

/** Memory access flags (enum ibv_access_flags). */
export const Access = {
  LOCAL_WRITE: 1,
  REMOTE_WRITE: 2,
  REMOTE_READ: 4,
  REMOTE_ATOMIC: 8,
  MW_BIND: 16,
  ZERO_BASED: 32,
  ON_DEMAND: 64,
  HUGETLB: 128,
  RELAXED_ORDERING: 1 << 20,
} as const;

/** Work request opcodes (enum ibv_wr_opcode). */
export const WrOpcode = {
  RDMA_WRITE: 0,
  RDMA_WRITE_WITH_IMM: 1,
  SEND: 2,
  SEND_WITH_IMM: 3,
  RDMA_READ: 4,
  ATOMIC_CMP_AND_SWP: 5,
  ATOMIC_FETCH_AND_ADD: 6,
  LOCAL_INV: 7,
  BIND_MW: 8,
  SEND_WITH_INV: 9,
} as const;
export type WrOpcodeName = keyof typeof WrOpcode;

/** Send flags (enum ibv_send_flags). */
export const SendFlags = { FENCE: 1, SIGNALED: 2, SOLICITED: 4, INLINE: 8 } as const;

/** Work completion status (enum ibv_wc_status), indexed by value. */
export const WC_STATUS = [
  'SUCCESS', 'LOC_LEN_ERR', 'LOC_QP_OP_ERR', 'LOC_EEC_OP_ERR', 'LOC_PROT_ERR', 'WR_FLUSH_ERR',
  'MW_BIND_ERR', 'BAD_RESP_ERR', 'LOC_ACCESS_ERR', 'REM_INV_REQ_ERR', 'REM_ACCESS_ERR', 'REM_OP_ERR',
  'RETRY_EXC_ERR', 'RNR_RETRY_EXC_ERR', 'LOC_RDD_VIOL_ERR', 'REM_INV_RD_REQ_ERR', 'REM_ABORT_ERR',
  'INV_EECN_ERR', 'INV_EEC_STATE_ERR', 'FATAL_ERR', 'RESP_TIMEOUT_ERR', 'GENERAL_ERR', 'TM_ERR',
  'TM_RNDV_INCOMPLETE',
] as const;
export type WcStatusName = (typeof WC_STATUS)[number] | 'UNKNOWN';

/** Work completion opcodes (enum ibv_wc_opcode). */
export const WcOpcode = {
  SEND: 0, RDMA_WRITE: 1, RDMA_READ: 2, COMP_SWAP: 3, FETCH_ADD: 4, BIND_MW: 5, LOCAL_INV: 6, TSO: 7,
  RECV: 128, RECV_RDMA_WITH_IMM: 129,
} as const;
/** The same opcodes by number. */
export const WC_OPCODE: Record<number, string> = Object.fromEntries(Object.entries(WcOpcode).map(([k, v]) => [v, k]));

/** Work completion flags (enum ibv_wc_flags). */
export const WcFlags = { GRH: 1, WITH_IMM: 2, IP_CSUM_OK: 4, WITH_INV: 8 } as const;

/** QP states (enum ibv_qp_state). */
export const QpState = { RESET: 0, INIT: 1, RTR: 2, RTS: 3, SQD: 4, SQE: 5, ERR: 6 } as const;
export type QpStateName = keyof typeof QpState;

/** QP types (enum ibv_qp_type). */
export const QpType = { RC: 2, UC: 3, UD: 4 } as const;
export type QpTypeName = keyof typeof QpType;

/** ibv_advise_mr advice (enum ib_uverbs_advise_mr_advice) and flag. */
export const Advice = { PREFETCH: 0, PREFETCH_WRITE: 1, PREFETCH_NO_FAULT: 2 } as const;
export const ADVISE_MR_FLAG_FLUSH = 1;
