/* netvigil enforcement datapath (BCC).
 *
 * cgroup-v2 sock_addr programs (connect4/6, sendmsg4/6, bind4/6) and tc
 * clsact classifiers (ingress/egress) consult the same pinned deny map and
 * emit a verdict for every decision they take.
 *
 * Only UAPI structs (struct bpf_sock_addr, struct __sk_buff) and helper
 * results are read, so this compiles against any kernel headers.
 *
 * Compile-time defines (set by sensor/enforcement/datapath.py):
 *   NV_PIN_MAPS   "<base>/maps" string literal: where the maps are pinned.
 *
 * Lookup strategy (one LPM lookup answers one (scope, proto, port) tuple):
 *   scopes:  node (0), the ancestors of the current cgroup (shallow to deep,
 *            at most NV_MAX_LEVELS levels), then the current cgroup. nv_nets
 *            says, per scope, which wildcard combinations have entries whose
 *            network overlaps the address's coarse net (IPv4 /16, IPv6 /32),
 *            and, only when that net holds long entries, its fine net (IPv4
 *            /24, IPv6 /64); nv_scopes adds those of wide entries, read only
 *            when the node has any (nv_meta[NV_META_WIDE]). So a scope without
 *            entries near the address costs one or two hash lookups and absent
 *            combinations cost nothing.
 *   combos:  (proto, port), (proto, any), (any, port), (any, any).
 *   Port-specific combinations are skipped unless nv_ports says an entry
 *   names this (scope, dir, proto, port).
 *   An enforce-mode match ends the search; an audit-mode match is kept while
 *   the remaining scopes are searched for an enforce-mode one (the deepest
 *   audit match is reported).
 */
#include "enforce.h"

#ifndef NV_PIN_MAPS
#error "NV_PIN_MAPS must be defined"
#endif

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define NV_HTONS(x) ((u16)__builtin_bswap16(x))
#else
#define NV_HTONS(x) ((u16)(x))
#endif

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define NV_V4MAPPED_WORD 0xffff0000u   /* bytes 00 00 ff ff of ::ffff:0:0/96, as a u32 */
#else
#define NV_V4MAPPED_WORD 0x0000ffffu
#endif

#define NV_TC_OK 0
#define NV_TC_SHOT 2

BPF_TABLE_PINNED("lpm_trie", struct nv_deny_key, struct nv_deny_val, nv_deny, 65536,
                 NV_PIN_MAPS "/deny", BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("hash", u64, struct nv_scope_val, nv_scopes, 16384, NV_PIN_MAPS "/scopes");
BPF_TABLE_PINNED("hash", struct nv_port_key, u32, nv_ports, 65536, NV_PIN_MAPS "/ports");
BPF_TABLE_PINNED("hash", struct nv_net_key, struct nv_net_val, nv_nets, 262144,
                 NV_PIN_MAPS "/nets", BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lpm_trie", struct nv_safe_key, u8, nv_safe, 4096,
                 NV_PIN_MAPS "/safe", BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("hash", u32, struct nv_rule_name, nv_rules, 8192, NV_PIN_MAPS "/rules");
BPF_TABLE_PINNED("hash", u32, struct nv_attach_rec, nv_attach, 256, NV_PIN_MAPS "/attach");
BPF_TABLE_PINNED("array", u32, u64, nv_meta, 4, NV_PIN_MAPS "/meta");
BPF_TABLE_PINNED("percpu_array", u32, u64, nv_stats, NV_STAT_MAX, NV_PIN_MAPS "/stats");

/* Ring buffer of verdicts, pinned like the maps (BCC has no pinned ringbuf macro). */
struct nv_verdicts_table_t {
    int key;
    u32 leaf;
    int (*ringbuf_output)(void *, u64, u64);
    void *(*ringbuf_reserve)(u64);
    void (*ringbuf_discard)(void *, u64);
    void (*ringbuf_submit)(void *, u64);
    u32 max_entries;
};
__attribute__((section("maps/ringbuf:" NV_PIN_MAPS "/verdicts")))
struct nv_verdicts_table_t nv_verdicts = {.max_entries = 64 * 4096};

struct nv_match {
    struct nv_deny_key key; /* exact key of the chosen entry (for the hit counter) */
    u64 scope;
    u32 rule_id;
    u8 mode;                /* 0 = no match */
};

static __always_inline void nv_count(u32 idx)
{
    u64 *v = nv_stats.lookup(&idx);
    if (v)
        *v += 1;
}

/* The coarse and fine nets of an address for nv_nets (scope and dir are set per
 * lookup). */
static __always_inline void nv_net_of(const u8 *addr, struct nv_net_key *nk,
                                      struct nv_net_key *fk)
{
    u32 w[3];
    __builtin_memcpy(w, addr, 12);
    if (w[0] == 0 && w[1] == 0 && w[2] == NV_V4MAPPED_WORD) {
        nk->family = 4;
        nk->bits = NV_NET_V4_COARSE;
        nk->net[0] = addr[12];
        nk->net[1] = addr[13];
        fk->family = 4;
        fk->bits = NV_NET_V4_FINE;
        __builtin_memcpy(fk->net, &addr[12], 3);
    } else {
        nk->family = 6;
        nk->bits = NV_NET_V6_COARSE;
        __builtin_memcpy(nk->net, addr, 4);
        fk->family = 6;
        fk->bits = NV_NET_V6_FINE;
        __builtin_memcpy(fk->net, addr, 8);
    }
}

/* Whether the node has wide entries (nv_scopes is read only then). */
static __always_inline u64 nv_wide_entries(void)
{
    u32 idx = NV_META_WIDE;
    u64 *v = nv_meta.lookup(&idx);
    return v ? *v : 0;
}

/* Bit c set when count[c] != 0 (counts stay below 2^31), without branches: the
 * verifier then keeps one state per scope rather than one per combination. */
static __always_inline u32 nv_nonzero4(const u32 *count)
{
    return ((0u - count[0]) >> 31) | (((0u - count[1]) >> 31) << 1) |
           (((0u - count[2]) >> 31) << 2) | (((0u - count[3]) >> 31) << 3);
}

/* Look up every wildcard combination of one scope that may match. */
static __always_inline void nv_try_scope(u64 scope, u8 dir, u8 proto, u16 port,
                                         const u8 *addr, struct nv_net_key *nk,
                                         struct nv_net_key *fk, u64 wide, u64 now,
                                         struct nv_match *m)
{
    u32 combos = 0;   /* bit c: combination c has entries that may match */
    nk->scope = scope;
    nk->dir = dir;
    fk->scope = scope;   /* written on every path: the verifier then prunes the paths alike */
    fk->dir = dir;
    struct nv_net_val *nv = nv_nets.lookup(nk);
    if (nv) {
        combos = nv_nonzero4(nv->count);
        if (nv->finer) {
            /* long entries in this coarse net: are any in the address's fine net? */
            struct nv_net_val *fv = nv_nets.lookup(fk);
            if (fv)
                combos |= nv_nonzero4(fv->count);
        }
    }
    if (wide) {
        struct nv_scope_val *sv = nv_scopes.lookup(&scope);
        if (sv)
            combos |= nv_nonzero4(&sv->count[dir == NV_DIR_INGRESS ? 4 : 0]);
    }
    if (!combos)
        return;
    struct nv_deny_key k = {};
    k.prefixlen = NV_DENY_FULL_BITS;
    k.scope_lo = (u32)scope;
    k.scope_hi = (u32)(scope >> 32);
    k.dir = dir;
    __builtin_memcpy(k.addr, addr, 16);

    struct nv_port_key pk = {};
    pk.scope = scope;
    pk.dir = dir;
    pk.port = port;

    for (int c = 0; c < 4; c++) {
        if (!(combos & (1u << c)))
            continue;
        k.proto = (c & 2) ? NV_PROTO_ANY : proto;
        k.port = (c & 1) ? 0 : port;
        if (!(c & 1)) {
            /* a port-specific combination: one hash lookup says whether any entry
             * names this port before the trie is walked for it */
            pk.proto = k.proto;
            if (!nv_ports.lookup(&pk))
                continue;
        }
        struct nv_deny_val *v = nv_deny.lookup(&k);
        if (!v)
            continue;
        if (v->expires_ns && v->expires_ns <= now)
            continue;
        /* first match, an enforce match, or an audit match in a deeper scope */
        if (m->mode == 0 || v->mode == NV_MODE_ENFORCE || m->scope != scope) {
            m->mode = v->mode;
            m->rule_id = v->rule_id;
            m->scope = scope;
            __builtin_memcpy(&m->key, &k, sizeof(k));
        }
        if (m->mode == NV_MODE_ENFORCE)
            return;
    }
}

/* Safety list: (addr, port) then (addr, any port). */
static __always_inline int nv_is_safe(const u8 *addr, u16 port)
{
    struct nv_safe_key k = {};
    k.prefixlen = NV_SAFE_FIXED_BITS + 128;
    k.port = port;
    __builtin_memcpy(k.addr, addr, 16);
    if (nv_safe.lookup(&k))
        return 1;
    k.port = 0;
    if (nv_safe.lookup(&k))
        return 1;
    return 0;
}

/* Match in node scope, then the calling task's ancestors (shallow to deep, stopping
 * at its depth), then its own cgroup. Deeper audit matches replace shallower
 * ones, an enforce match ends the search. */
static __always_inline void nv_match_current(u8 dir, u8 proto, u16 port, const u8 *addr,
                                             u64 now, u64 cur, struct nv_match *m)
{
    struct nv_net_key nk = {}, fk = {};
    nv_net_of(addr, &nk, &fk);
    u64 wide = nv_wide_entries();
    nv_try_scope(0, dir, proto, port, addr, &nk, &fk, wide, now, m);
#pragma clang loop unroll(disable)
    for (int lvl = 1; lvl <= NV_MAX_LEVELS; lvl++) {
        if (m->mode == NV_MODE_ENFORCE)
            return;
        u64 a = bpf_get_current_ancestor_cgroup_id(lvl);
        if (a == 0 || a == cur)
            break;
        nv_try_scope(a, dir, proto, port, addr, &nk, &fk, wide, now, m);
    }
    if (m->mode != NV_MODE_ENFORCE && cur)
        nv_try_scope(cur, dir, proto, port, addr, &nk, &fk, wide, now, m);
}

/* Same order for a packet: node, then (egress) the socket's cgroup ancestry. */
static __always_inline void nv_match_skb(struct __sk_buff *skb, u64 cg, u8 dir, u8 proto,
                                         u16 port, const u8 *addr, u64 now, struct nv_match *m)
{
    struct nv_net_key nk = {}, fk = {};
    nv_net_of(addr, &nk, &fk);
    u64 wide = nv_wide_entries();
    nv_try_scope(0, dir, proto, port, addr, &nk, &fk, wide, now, m);
    if (!cg)
        return;
#pragma clang loop unroll(disable)
    for (int lvl = 1; lvl <= NV_MAX_LEVELS; lvl++) {
        if (m->mode == NV_MODE_ENFORCE)
            return;
        u64 a = bpf_skb_ancestor_cgroup_id(skb, lvl);
        if (a == 0 || a == cg)
            break;
        nv_try_scope(a, dir, proto, port, addr, &nk, &fk, wide, now, m);
    }
    if (m->mode != NV_MODE_ENFORCE)
        nv_try_scope(cg, dir, proto, port, addr, &nk, &fk, wide, now, m);
}

static __always_inline void nv_emit(struct nv_match *m, u8 hook, u8 family, u8 proto,
                                    u16 rport_net, u16 lport_net, const u8 *raddr,
                                    const u8 *laddr, u64 pid_tgid, u64 cg, u32 ifindex)
{
    struct nv_verdict *e = nv_verdicts.ringbuf_reserve(sizeof(struct nv_verdict));
    if (!e) {
        nv_count(NV_STAT_LOST);
        return;
    }
    e->ts_ns = bpf_ktime_get_boot_ns();
    e->pid_tgid = pid_tgid;
    e->cgroup_id = cg;
    e->scope_id = m->scope;
    e->rule_id = m->rule_id;
    e->verdict = m->mode == NV_MODE_ENFORCE ? NV_VERDICT_DENY : NV_VERDICT_AUDIT;
    e->hook = hook;
    e->family = family;
    e->proto = proto;
    e->rport = NV_HTONS(rport_net);
    e->lport = NV_HTONS(lport_net);
    e->ifindex = ifindex;
    __builtin_memcpy(e->raddr, raddr, 16);
    __builtin_memcpy(e->laddr, laddr, 16);
    if (pid_tgid)
        bpf_get_current_comm(e->comm, sizeof(e->comm));
    else
        __builtin_memset(e->comm, 0, sizeof(e->comm));
    nv_verdicts.ringbuf_submit(e, 0);
}

/* Account a match: hit counter, counters, verdict. Returns 1 to deny. */
static __always_inline int nv_decide(struct nv_match *m, u8 hook, u8 family, u8 proto,
                                     u16 rport_net, u16 lport_net, const u8 *raddr,
                                     const u8 *laddr, u64 pid_tgid, u64 cg, u32 ifindex)
{
    struct nv_deny_val *v = nv_deny.lookup(&m->key);
    if (v)
        __sync_fetch_and_add(&v->hits, 1);
    nv_count(m->mode == NV_MODE_ENFORCE ? NV_STAT_DENIED : NV_STAT_AUDITED);
    nv_emit(m, hook, family, proto, rport_net, lport_net, raddr, laddr, pid_tgid, cg, ifindex);
    return m->mode == NV_MODE_ENFORCE;
}

/* ---- cgroup sock_addr ------------------------------------------------- */

static __always_inline int nv_sock_addr(struct bpf_sock_addr *ctx, u8 hook, u8 family, u8 dir)
{
    u8 addr[16] = {};
    u8 zero[16] = {};
    if (family == 4) {
        u32 ip4 = ctx->user_ip4;
        addr[10] = 0xff;
        addr[11] = 0xff;
        __builtin_memcpy(&addr[12], &ip4, 4);
    } else {
        u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1];
        u32 w2 = ctx->user_ip6[2], w3 = ctx->user_ip6[3];
        __builtin_memcpy(&addr[0], &w0, 4);
        __builtin_memcpy(&addr[4], &w1, 4);
        __builtin_memcpy(&addr[8], &w2, 4);
        __builtin_memcpy(&addr[12], &w3, 4);
    }
    u16 port = (u16)ctx->user_port;
    u8 proto = (u8)ctx->protocol;
    u64 now = bpf_ktime_get_boot_ns();
    u64 cur = bpf_get_current_cgroup_id();
    struct nv_match m = {};
    nv_match_current(dir, proto, port, addr, now, cur, &m);
    if (m.mode == 0)
        return 1;
    if (nv_is_safe(addr, port)) {
        nv_count(NV_STAT_SAFE);
        return 1;
    }
    int deny;
    if (dir == NV_DIR_INGRESS)
        deny = nv_decide(&m, hook, family, proto, 0, port, zero, addr,
                         bpf_get_current_pid_tgid(), cur, 0);
    else
        deny = nv_decide(&m, hook, family, proto, port, 0, addr, zero,
                         bpf_get_current_pid_tgid(), cur, 0);
    return deny ? 0 : 1;
}

int nv_connect4(struct bpf_sock_addr *ctx) { return nv_sock_addr(ctx, NV_HOOK_CONNECT4, 4, NV_DIR_EGRESS); }
int nv_connect6(struct bpf_sock_addr *ctx) { return nv_sock_addr(ctx, NV_HOOK_CONNECT6, 6, NV_DIR_EGRESS); }
int nv_sendmsg4(struct bpf_sock_addr *ctx) { return nv_sock_addr(ctx, NV_HOOK_SENDMSG4, 4, NV_DIR_EGRESS); }
int nv_sendmsg6(struct bpf_sock_addr *ctx) { return nv_sock_addr(ctx, NV_HOOK_SENDMSG6, 6, NV_DIR_EGRESS); }
int nv_bind4(struct bpf_sock_addr *ctx) { return nv_sock_addr(ctx, NV_HOOK_BIND4, 4, NV_DIR_INGRESS); }
int nv_bind6(struct bpf_sock_addr *ctx) { return nv_sock_addr(ctx, NV_HOOK_BIND6, 6, NV_DIR_INGRESS); }

/* ---- tc clsact ---------------------------------------------------------- */

/* Ethernet devices only (veth, physical NICs). The remote end of a packet is
 * its destination on egress and its source on ingress. Checks both the
 * remote-endpoint entries (remote addr, remote port) and the listen-port
 * entries (remote addr, local port). Scope: node, plus on egress the
 * sending socket's cgroup and its ancestors (bpf_skb_cgroup_id). */
static __always_inline int nv_tc(struct __sk_buff *skb, int egress)
{
    u8 src[16] = {};
    u8 dst[16] = {};
    u8 proto = 0;
    u8 family;
    u32 l4;
    const u32 off = 14;

    /* IPv6 first: the verifier walks the fall-through first, and an IPv4 packet's
     * addresses (zero bytes, then the v4-mapped prefix) are a special case of an IPv6
     * one's (any bytes), so the IPv4 path is pruned against it rather than walked in
     * full (tc egress: 268k verified instructions instead of 980k of the 1M limit). */
    if (skb->protocol == NV_HTONS(0x86DD)) {
        if (bpf_skb_load_bytes(skb, off + 6, &proto, 1) < 0)
            return NV_TC_OK;
        if (bpf_skb_load_bytes(skb, off + 8, src, 16) < 0)
            return NV_TC_OK;
        if (bpf_skb_load_bytes(skb, off + 24, dst, 16) < 0)
            return NV_TC_OK;
        l4 = off + 40;
        family = 6;
    } else if (skb->protocol == NV_HTONS(0x0800)) {
        u8 vihl = 0;
        u16 frag = 0;
        if (bpf_skb_load_bytes(skb, off, &vihl, 1) < 0)
            return NV_TC_OK;
        u32 ihl = (vihl & 0x0f) * 4;
        if (ihl < 20)
            return NV_TC_OK;
        if (bpf_skb_load_bytes(skb, off + 6, &frag, 2) < 0)
            return NV_TC_OK;
        if (NV_HTONS(frag) & 0x1fff)
            return NV_TC_OK; /* non-first fragment: no L4 header */
        if (bpf_skb_load_bytes(skb, off + 9, &proto, 1) < 0)
            return NV_TC_OK;
        src[10] = 0xff;
        src[11] = 0xff;
        dst[10] = 0xff;
        dst[11] = 0xff;
        if (bpf_skb_load_bytes(skb, off + 12, &src[12], 4) < 0)
            return NV_TC_OK;
        if (bpf_skb_load_bytes(skb, off + 16, &dst[12], 4) < 0)
            return NV_TC_OK;
        l4 = off + ihl;
        family = 4;
    } else {
        return NV_TC_OK;
    }
    if (proto != NV_PROTO_TCP && proto != NV_PROTO_UDP)
        return NV_TC_OK;
    u16 ports[2] = {};
    if (bpf_skb_load_bytes(skb, l4 & 0xffff, ports, 4) < 0)
        return NV_TC_OK;

    const u8 *raddr = egress ? dst : src;
    const u8 *laddr = egress ? src : dst;
    u16 rport = egress ? ports[1] : ports[0];
    u16 lport = egress ? ports[0] : ports[1];
    u64 cg = egress ? bpf_skb_cgroup_id(skb) : 0;
    u64 now = bpf_ktime_get_boot_ns();

    struct nv_match m = {};
    nv_match_skb(skb, cg, NV_DIR_EGRESS, proto, rport, raddr, now, &m);
    if (m.mode != NV_MODE_ENFORCE)
        nv_match_skb(skb, cg, NV_DIR_INGRESS, proto, lport, raddr, now, &m);
    if (m.mode == 0)
        return NV_TC_OK;
    if (nv_is_safe(raddr, rport) || nv_is_safe(raddr, lport)) {
        nv_count(NV_STAT_SAFE);
        return NV_TC_OK;
    }
    int deny = nv_decide(&m, egress ? NV_HOOK_TC_EGRESS : NV_HOOK_TC_INGRESS, family, proto,
                         rport, lport, raddr, laddr, 0, cg, skb->ifindex);
    return deny ? NV_TC_SHOT : NV_TC_OK;
}

int nv_tc_ingress(struct __sk_buff *skb) { return nv_tc(skb, 0); }
int nv_tc_egress(struct __sk_buff *skb) { return nv_tc(skb, 1); }
