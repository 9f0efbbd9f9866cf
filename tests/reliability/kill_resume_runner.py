"""The training launcher of ``test_kill_resume.py``.

Importing torch, mmdet and mmattn takes tens of seconds on the CI machine,
so this process imports them once and then forks one training process per
command (the children share nothing but the imported code: each builds its
runner, reads and writes its checkpoints on disk, and is killed for real
with SIGKILL by the test).

Protocol, one JSON object per line:

* stdin: ``{"argv": [...], "log": path, "stall": "N:SUFFIX" or ""}``, where
  ``argv`` are ``tools/train.py`` arguments; ``""`` ends the launcher;
* stdout: ``{"ready": true}`` once imported, then per command
  ``{"pid": pid}`` when the child is started and ``{"pid": pid,
  "status": s}`` when it has ended (exit code, or -signal).

A child writes its stdout and stderr to ``log``. With ``stall`` the
child's N-th ``os.replace`` of a file whose name ends in ``SUFFIX`` (the
final rename of the atomic checkpoint / ``last_checkpoint`` writes) stops
*inside the save*, after the temporary file is written: the child prints
``IN_SAVE <file>`` to its log and sleeps, so that the test can kill it
there. This stall lives in this test launcher only, not in the library.
"""
import importlib.util
import json
import os
import os.path as osp
import sys
import time
import traceback

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO)

import mmattn  # noqa: E402,F401
from mmdet.utils import register_all_modules  # noqa: E402

register_all_modules(init_default_scope=False)  # import what Runner would
_spec = importlib.util.spec_from_file_location(
    'mmattn_tools_train', osp.join(REPO, 'tools', 'train.py'))
train = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train)


def install_stall(spec: str) -> None:
    count, suffix = spec.split(':', 1)
    count = int(count)
    real_replace = os.replace
    seen = []

    def replace(src, dst, *args, **kwargs):
        if str(src).endswith(suffix):
            seen.append(src)
            if len(seen) == count:
                print(f'IN_SAVE {src}', flush=True)
                time.sleep(600)
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace


def run_child(command: dict) -> None:
    """In the forked child: train, then exit without returning."""
    code = 1
    try:
        fd = os.open(command['log'], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout.reconfigure(line_buffering=True)
        sys.stderr.reconfigure(line_buffering=True)
        if command.get('stall'):
            install_stall(command['stall'])
        train.main(command['argv'])
        code = 0
    except BaseException:  # noqa: B902  (report anything, then exit)
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + '\n')
    sys.stdout.flush()


def main() -> None:
    reply({'ready': True})
    for line in sys.stdin:
        if not line.strip():
            break
        command = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run_child(command)
        reply({'pid': pid})
        _, status = os.waitpid(pid, 0)
        reply({'pid': pid, 'status': os.waitstatus_to_exitcode(status)})


if __name__ == '__main__':
    main()
