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
