"""What the process-fault tests read from /proc: who is whose child, and who still runs (a
zombie holds no memory: its new parent reaps it)."""
import os


def proc_table():
    """{pid: (parent pid, state letter)} of every process."""
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[int(d)] = (int(fields[1]), fields[0])
    return out


def children(pid):
    return sorted(c for c, (parent, _) in proc_table().items() if parent == pid)


def parent_of(pid):
    return proc_table().get(pid, (None,))[0]


def running(pids):
    """The pids that run (not gone, not a zombie)."""
    table = proc_table()
    return [p for p in pids if p in table and table[p][1] != "Z"]


def tree(pid):
    """pid and every descendant that runs (paddle.distributed.launch starts each trainer in a
    session of its own, so a process group is not the whole node)."""
    table, found, todo = proc_table(), [], [pid]
    while todo:
        p = todo.pop()
        if p in table and table[p][1] != "Z":
            found.append(p)
        todo += [c for c, (parent, _) in table.items() if parent == p]
    return found
