/* netvigil sensor, process hooks: exec (with its arguments), fork (not threads), exit
 * (with the exit_group code). Follows sensor_core.c in the program text. */

BPF_TABLE("lru_hash", u32, u64, clone_flags, 8192);
BPF_HASH(exit_codes, u32, s32, 16384);
BPF_PERCPU_ARRAY(exec_scratch, struct nv_exec_event, 1);
BPF_TABLE("lru_hash", u32, struct nv_exec_event, exec_args, 1024);

static __always_inline int stash_exec_args(const char *const *argv)
{
    int zero = 0;
    struct nv_exec_event *e = exec_scratch.lookup(&zero);
    if (!e)
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u32 off = 0;
    u32 count = 0;
    e->flags = 0;
#pragma unroll
    for (int i = 0; i < NV_MAX_ARGS; i++) {
        const char *arg = NULL;
        if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) || !arg)
            goto done;
        if (off >= NV_ARGS_SIZE) {
            e->flags = 1;
            goto done;
        }
        int n = bpf_probe_read_user_str(&e->args[off & (NV_ARGS_SIZE - 1)], NV_ARG_LEN, arg);
        if (n <= 0)
            goto done;
        off += n;
        count++;
    }
    e->flags = 1;   /* more than NV_MAX_ARGS arguments */
done:
    e->args_len = off > NV_ARGS_SIZE ? NV_ARGS_SIZE : off;
    e->args_count = count;
    exec_args.update(&tid, e);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_execve)
{
    return stash_exec_args((const char *const *)args->argv);
}

TRACEPOINT_PROBE(syscalls, sys_enter_execveat)
{
    return stash_exec_args((const char *const *)args->argv);
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    u32 old = args->old_pid;
    struct nv_exec_event *stash = exec_args.lookup(&old);
    int zero = 0;
    struct nv_exec_event *e = stash ? stash : exec_scratch.lookup(&zero);
    if (!e)
        return 0;
    if (!stash) {
        e->args_len = 0;
        e->args_count = 0;
        e->flags = 0;
    }
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
    if (stash)
        exec_args.delete(&old);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_clone)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 flags = args->clone_flags;
    clone_flags.update(&tid, &flags);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_clone3)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 flags = 0;
    bpf_probe_read_user(&flags, sizeof(flags), (void *)args->uargs);  /* clone_args.flags */
    clone_flags.update(&tid, &flags);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_fork)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 *flags = clone_flags.lookup(&tid);
    if (flags) {
        u64 f = *flags;
        clone_flags.delete(&tid);
        if (f & NV_CLONE_THREAD)
            return 0;
    }
    struct nv_fork_event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        count_lost();
        return 0;
    }
    u64 now = bpf_ktime_get_boot_ns();
    fill_header(&e->h, NV_FORK, now);
    e->child_pid = args->child_pid;
    e->pad = 0;
    events.ringbuf_submit(e, wakeup_flag(now));
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_exit_group)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    s32 code = args->error_code;
    exit_codes.update(&tgid, &code);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    if (!args->group_dead)
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    s32 *code = exit_codes.lookup(&tgid);
    struct nv_exit_event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        count_lost();
    } else {
        u64 now = bpf_ktime_get_boot_ns();
        fill_header(&e->h, NV_EXIT, now);
        e->code = code ? *code : -1;
        e->pad = 0;
        events.ringbuf_submit(e, wakeup_flag(now));
    }
    if (code)
        exit_codes.delete(&tgid);
    return 0;
}
