/* netvigil sensor, process hooks: exec (with its arguments), fork (not threads), exit
 * (with its code), on sched and task tracepoints only (they cost only when a process
 * starts or ends). Follows sensor_core.c in the program text, and
 * sensor_process_syscalls.c when the kernel's BTF lacks the offsets read here. */

BPF_PERCPU_ARRAY(exec_scratch, struct nv_exec_event, 1);

#ifdef NV_OFF_TASK_MM
/* The new image's arguments, from its mm (arg_start..arg_end: NUL-separated, set up
 * before sched_process_exec fires). Offsets come from the running kernel's BTF (see
 * sensor/btf.py); the task and mm pointers are only added to, never dereferenced. */
static __always_inline void take_exec_args(struct nv_exec_event *e, u32 old_pid)
{
    u64 task = bpf_get_current_task();
    u64 mm = 0, start = 0, end = 0;
    if (bpf_probe_read_kernel(&mm, sizeof(mm), (void *)(task + NV_OFF_TASK_MM)) || !mm)
        return;
    if (bpf_probe_read_kernel(&start, sizeof(start), (void *)(mm + NV_OFF_MM_ARG_START)) ||
        bpf_probe_read_kernel(&end, sizeof(end), (void *)(mm + NV_OFF_MM_ARG_END)) || end <= start)
        return;
    u64 len = end - start;
    if (len > NV_ARGS_SIZE) {
        len = NV_ARGS_SIZE;
        e->flags = 1;
    }
    if (bpf_probe_read_user(e->args, len, (void *)start))
        return;
    e->args_len = len;
    e->args_count = 0;      /* the decoder splits on NUL */
}

/* exit status of the process: its exit code, -1 when a signal ended it */
static __always_inline s32 exit_status(u32 tgid)
{
    u64 task = bpf_get_current_task();
    s32 status = 0;
    if (bpf_probe_read_kernel(&status, sizeof(status), (void *)(task + NV_OFF_TASK_EXIT_CODE)))
        return -1;
    return (status & 0x7f) ? -1 : (status >> 8) & 0xff;
}
#endif

#ifdef NV_STDIO_AT_EXEC
#define NV_S_IFMT 00170000
#define NV_S_IFSOCK 0140000
/* Sockets on fds 0-2 of the process that just exec'd (the reverse-shell signal without a
 * dup2/dup3 syscall hook: a shell or tool started with a socket as its stdio), each
 * reported as a dup2 onto that fd. Offsets from the running kernel's BTF: task_struct
 * .files -> files_struct.fdt -> fdtable.fd[i] -> file.f_inode->i_mode (S_IFSOCK), then
 * file.private_data -> socket.sk -> the addresses in sock_common. */
static __always_inline void stdio_sockets(u64 now)
{
    u64 task = bpf_get_current_task();
    u64 files = 0, fdt = 0, fds = 0;
    if (NV_KREAD(files, task, NV_OFF_TASK_FILES) || !files || NV_KREAD(fdt, files, NV_OFF_FILES_FDT) ||
        !fdt || NV_KREAD(fds, fdt, NV_OFF_FDT_FD) || !fds)
        return;
    u64 file[3] = {};
    if (bpf_probe_read_kernel(file, sizeof(file), (void *)fds))
        return;
#pragma unroll
    for (int i = 0; i < 3; i++) {
        u64 inode = 0, sock = 0, sk = 0;
        u16 mode = 0, family = 0, lport = 0, rport = 0;
        s16 type = 0;
        if (!file[i] || NV_KREAD(inode, file[i], NV_OFF_FILE_F_INODE) || !inode ||
            NV_KREAD(mode, inode, NV_OFF_INODE_I_MODE) || (mode & NV_S_IFMT) != NV_S_IFSOCK)
            continue;
        if (NV_KREAD(sock, file[i], NV_OFF_FILE_PRIVATE_DATA) || !sock || NV_KREAD(sk, sock, NV_OFF_SOCKET_SK) ||
            !sk || NV_KREAD(type, sock, NV_OFF_SOCKET_TYPE) || NV_KREAD(family, sk, NV_OFF_SKC_FAMILY))
            continue;
        if (family != NV_AF_INET && family != NV_AF_INET6)
            continue;
        struct nv_net_event *e = events.ringbuf_reserve(sizeof(struct nv_net_event));
        if (!e) {
            count_lost();
            return;
        }
        fill_header(&e->h, NV_NET, now);
        e->ret = i;
        e->fd = i;
        e->op = NV_OP_DUP2;
        e->aux = i;
        __builtin_memset(&e->s, 0, sizeof(e->s));
        e->s.gen = now;
        e->s.family = family;
        e->s.type = type == NV_SOCK_STREAM ? NV_SOCK_STREAM : NV_SOCK_DGRAM;
        NV_KREAD(lport, sk, NV_OFF_SKC_NUM);
        NV_KREAD(rport, sk, NV_OFF_SKC_DPORT);
        e->s.lport = lport;
        e->s.rport = __builtin_bswap16(rport);
        if (family == NV_AF_INET6) {
            bpf_probe_read_kernel(e->s.laddr, 16, (void *)(sk + NV_OFF_SKC_V6_RCV_SADDR));
            bpf_probe_read_kernel(e->s.raddr, 16, (void *)(sk + NV_OFF_SKC_V6_DADDR));
        } else {
            bpf_probe_read_kernel(e->s.laddr, 4, (void *)(sk + NV_OFF_SKC_RCV_SADDR));
            bpf_probe_read_kernel(e->s.raddr, 4, (void *)(sk + NV_OFF_SKC_DADDR));
        }
        events.ringbuf_submit(e, wakeup_flag(now));
    }
}
#endif

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    int zero = 0;
    struct nv_exec_event *e = exec_scratch.lookup(&zero);
    if (!e)
        return 0;
    u32 old = args->old_pid;
    e->args_len = 0;
    e->args_count = 0;
    e->flags = 0;
    take_exec_args(e, old);
    u64 now = bpf_ktime_get_boot_ns();
    fill_header(&e->h, NV_EXEC, now);
    e->old_pid = old;
    u32 loc = args->data_loc_filename;
    int n = bpf_probe_read_kernel_str(e->path, sizeof(e->path), (void *)args + (loc & 0xFFFF));
    e->path_len = n > 0 ? n : 0;
    u32 len = offsetof(struct nv_exec_event, args) + (e->args_len & (NV_ARGS_SIZE - 1));
    if (e->args_len >= NV_ARGS_SIZE)
        len = offsetof(struct nv_exec_event, args) + NV_ARGS_SIZE;
    if (events.ringbuf_output(e, len, wakeup_flag(now)))
        count_lost();
#ifdef NV_STDIO_AT_EXEC
    stdio_sockets(now);
#endif
    return 0;
}

/* A new task, in the parent's context, once copy_process() can no longer fail: a fork
 * unless it is a thread. (No syscall hook on clone/clone3 needed for the flags.) */
TRACEPOINT_PROBE(task, task_newtask)
{
    if (args->clone_flags & NV_CLONE_THREAD)
        return 0;
    struct nv_fork_event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        count_lost();
        return 0;
    }
    u64 now = bpf_ktime_get_boot_ns();
    fill_header(&e->h, NV_FORK, now);
    e->child_pid = args->pid;
    e->pad = 0;
    events.ringbuf_submit(e, wakeup_flag(now));
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    if (!args->group_dead)
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    s32 code = exit_status(tgid);
    struct nv_exit_event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        count_lost();
        return 0;
    }
    u64 now = bpf_ktime_get_boot_ns();
    fill_header(&e->h, NV_EXIT, now);
    e->code = code;
    e->pad = 0;
    events.ringbuf_submit(e, wakeup_flag(now));
    return 0;
}
