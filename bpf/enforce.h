/* netvigil enforcement datapath: structs shared by bpf/enforce.c and
 * sensor/enforcement/keys.py (which packs the same layouts with `struct`).
 * Keep both in sync: a change here is a change of the pinned map ABI.
 *
 * Only fixed-size scalar fields, naturally aligned, no implicit padding.
 */
#ifndef NETVIGIL_ENFORCE_H
#define NETVIGIL_ENFORCE_H

/* direction of a deny entry */
#define NV_DIR_EGRESS 1   /* remote endpoint: connect, sendmsg, tc (remote side) */
#define NV_DIR_INGRESS 2  /* local listening port: bind, tc (local side) */

/* protocol (IANA numbers; 0 = any) */
#define NV_PROTO_ANY 0
#define NV_PROTO_TCP 6
#define NV_PROTO_UDP 17

/* entry mode */
#define NV_MODE_AUDIT 1
#define NV_MODE_ENFORCE 2

/* verdict kinds */
#define NV_VERDICT_DENY 1
#define NV_VERDICT_AUDIT 2

/* hooks that produce a verdict */
#define NV_HOOK_CONNECT4 1
#define NV_HOOK_CONNECT6 2
#define NV_HOOK_SENDMSG4 3
#define NV_HOOK_SENDMSG6 4
#define NV_HOOK_BIND4 5
#define NV_HOOK_BIND6 6
#define NV_HOOK_TC_INGRESS 7
#define NV_HOOK_TC_EGRESS 8

/* counters (per-CPU array indexes) */
#define NV_STAT_LOST 0      /* verdicts not delivered: ring buffer full */
#define NV_STAT_DENIED 1    /* decisions that denied */
#define NV_STAT_AUDITED 2   /* would-deny decisions in audit mode */
#define NV_STAT_SAFE 3      /* matches overridden by the safety list */
#define NV_STAT_MAX 8

/* cgroup ancestry levels walked per decision (plus the current cgroup and node) */
#define NV_MAX_LEVELS 12

/* Deny map key (LPM trie). The prefix always covers the 96 fixed bits
 * (scope, direction, protocol, port) plus the address prefix; IPv4 addresses
 * are stored v4-mapped (::ffff:a.b.c.d), so an IPv4 /N is prefix 96+96+N.
 * Wildcards are explicit values: scope 0 = node, proto 0 = any, port 0 = any;
 * the datapath looks them up in turn (gated by nv_scopes, see enforce.c). */
struct nv_deny_key {
    u32 prefixlen;
    u32 scope_lo;     /* cgroup id, low 32 bits (0 with scope_hi 0 = node) */
    u32 scope_hi;
    u8 dir;
    u8 proto;
    u16 port;         /* network byte order; 0 = any */
    u8 addr[16];      /* network byte order; IPv4 v4-mapped */
};
#define NV_DENY_FIXED_BITS 96
#define NV_DENY_FULL_BITS 224

struct nv_deny_val {
    u32 rule_id;      /* id in nv_rules (name) */
    u8 mode;          /* NV_MODE_* */
    u8 origin;        /* 1 static, 2 detection, 3 manual */
    u16 reserved;
    u64 expires_ns;   /* CLOCK_BOOTTIME ns; 0 = never; the datapath ignores expired entries */
    u64 created_ns;   /* CLOCK_BOOTTIME ns */
    u64 hits;         /* decisions taken on this entry */
};

/* Per scope: how many *wide* entries (those the net index below does not
 * cover) exist for each direction and wildcard combination, index
 * (dir == INGRESS ? 4 : 0) + ((proto_any << 1) | port_any). Read only while
 * nv_meta[NV_META_WIDE] (the node's count of wide entries) is not 0. */
struct nv_scope_val {
    u32 count[8];
};

/* Net index: for each (scope, direction, net) that some entry's network overlaps,
 * how many such entries exist per wildcard combination ((proto_any << 1) |
 * port_any). Two levels of nets, keyed by `bits` (the net's prefix length):
 *   coarse: the address's IPv4 /16 (family 4, v4-mapped addresses included) or
 *           IPv6 /32 (family 6). Counts the entries shorter than the fine level
 *           (IPv4 /8 to /23, IPv6 /24 to /63), and in `finer` how many longer
 *           entries its fine nets hold.
 *   fine:   the address's IPv4 /24 or IPv6 /64, consulted only when its coarse
 *           net's `finer` is not 0. Counts the entries of /24 (IPv6 /64) or longer
 *           inside it (`finer` 0).
 * `net` holds the net's first bytes in network order, the rest 0. Entries wider
 * than 2^8 coarse nets (IPv4 shorter than /8, IPv6 shorter than /24, or IPv6
 * networks that contain the v4-mapped range) are wide: counted in nv_scopes
 * instead. So a scope whose entries are all elsewhere costs one hash lookup, and
 * one whose entries are near (same /16 or /32) but not in the address's /24 or
 * /64 costs two. */
struct nv_net_key {
    u64 scope;
    u8 dir;
    u8 family;       /* 4 or 6 */
    u8 bits;         /* 16 or 24 (family 4), 32 or 64 (family 6) */
    u8 pad0;
    u32 pad1;
    u8 net[8];
};
#define NV_NET_V4_COARSE 16
#define NV_NET_V4_FINE 24
#define NV_NET_V6_COARSE 32
#define NV_NET_V6_FINE 64

struct nv_net_val {
    u32 count[4];
    u32 finer;       /* coarse nets: entries counted in their fine nets */
};

/* nv_meta indexes */
#define NV_META_SOURCE_HASH 0
#define NV_META_WIDE 1    /* live wide entries on the node (any scope) */
/* 2: the stamp of the stored scope records (sensor/enforcement/scope_records.py; no
 * program reads it) */

/* Port index: which (scope, direction, protocol, port) tuples have entries
 * with a specific port. Checked (one hash lookup) before the LPM lookup of a
 * port-specific combination, so traffic to ports no entry names never walks
 * the trie for them. */
struct nv_port_key {
    u64 scope;
    u8 dir;
    u8 proto;        /* 0 = entries with protocol any */
    u16 port;        /* network byte order */
    u32 pad;
};

/* Safety list key (LPM trie): port (0 = any) then the address. */
struct nv_safe_key {
    u32 prefixlen;
    u16 port;         /* network byte order; 0 = any */
    u16 pad;
    u8 addr[16];
};
#define NV_SAFE_FIXED_BITS 32

struct nv_rule_name {
    char name[128];
};

/* What the agent attached, so any later process can adopt or remove it. */
struct nv_attach_rec {
    u32 kind;         /* 1 cgroup, 2 tc */
    u32 attach_type;  /* bpf_attach_type, or 0 ingress / 1 egress for tc */
    u32 prog_id;
    u32 flags;        /* tc: 1 = netvigil created the clsact qdisc */
    char target[240]; /* cgroup2 path or interface name */
};

/* Verdict event (ring buffer record). */
struct nv_verdict {
    u64 ts_ns;        /* CLOCK_BOOTTIME */
    u64 pid_tgid;     /* 0 for tc */
    u64 cgroup_id;    /* current (sock_addr) or skb (tc egress) cgroup; 0 unknown */
    u64 scope_id;     /* scope of the matching entry (0 = node) */
    u32 rule_id;
    u8 verdict;       /* NV_VERDICT_* */
    u8 hook;          /* NV_HOOK_* */
    u8 family;        /* 4 or 6 */
    u8 proto;
    u16 rport;        /* host byte order */
    u16 lport;        /* host byte order */
    u32 ifindex;      /* tc only */
    u8 raddr[16];
    u8 laddr[16];
    char comm[16];
};

#endif
