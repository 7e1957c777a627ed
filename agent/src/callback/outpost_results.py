# Outpost's task-result callback, shipped inside the agent and written into each job's work
# directory. It writes one JSON line per task and host, and the recap, to the pipe the agent
# hands over in OUTPOST_RESULTS_FD: one write per event and nothing else (no facts, no module
# output, no file of its own), so a play pays a few microseconds per task for it. It never
# prints and never fails the play: if the pipe is gone it stops writing.
from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = '''
    name: outpost_results
    type: aggregate
    short_description: per-task results for the Outpost agent
    description:
      - Writes one line per task and host to the file descriptor named by OUTPOST_RESULTS_FD.
'''

MAX_NAME = 255
MAX_MSG = 1024


def _text(value, limit):
    text = value if isinstance(value, str) else str(value)
    text = text.strip()
    return text[:limit]


def _attr(obj, new, old):
    # ansible-core 2.19 names a result's host/task/result without the underscore.
    try:
        return getattr(obj, new)
    except AttributeError:
        return getattr(obj, old)


def _rescued(task):
    """Whether a failure of `task` is taken over by the rescue of a block it sits in."""
    child, parent = task, getattr(task, '_parent', None)
    while parent is not None:
        rescue = getattr(parent, 'rescue', None)
        body = getattr(parent, 'block', None)
        uuid = getattr(child, '_uuid', None)
        if rescue and body and any(getattr(t, '_uuid', None) == uuid for t in body):
            return True
        child, parent = parent, getattr(parent, '_parent', None)
    return False


def _message(result):
    res = _attr(result, 'result', '_result')
    msg = res.get('msg')
    if not msg:
        for item in res.get('results') or []:
            if isinstance(item, dict) and item.get('failed') and item.get('msg'):
                msg = item['msg']
                break
    if not msg:
        msg = res.get('stderr') or ('rc=%s' % res['rc'] if 'rc' in res else '')
    return _text(msg, MAX_MSG) or None


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'outpost_results'
    # Loaded from its path without being listed in callbacks_enabled, so a project's own list
    # (timer, profile_tasks…) and so its output stay as they are.
    CALLBACK_NEEDS_ENABLED = False
    CALLBACK_NEEDS_WHITELIST = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        fd = os.environ.get('OUTPOST_RESULTS_FD', '')
        self._fd = int(fd) if fd.isdigit() else None
        self._play = ''
        self._started = {}

    def _emit(self, event):
        if self._fd is None:
            return
        line = json.dumps(event, ensure_ascii=True, separators=(',', ':')) + '\n'
        try:
            os.write(self._fd, line.encode('ascii'))
        except OSError:
            self._fd = None

    def v2_playbook_on_play_start(self, play):
        self._play = _text(play.get_name(), MAX_NAME)

    def v2_runner_on_start(self, host, task):
        self._started[(host.get_name(), task._uuid)] = time.time()

    def _task(self, result, status, message=None):
        if self._fd is None:
            return
        host = _attr(result, 'host', '_host').get_name()
        task = _attr(result, 'task', '_task')
        end = time.time()
        start = self._started.pop((host, task._uuid), end)
        event = {
            'e': 'task',
            'host': _text(host, MAX_NAME),
            'play': self._play,
            'task': _text(task.get_name(), MAX_NAME),
            'action': _text(task.action or '', 100),
            'status': status,
            'start': int(start * 1000),
            'ms': max(0, int((end - start) * 1000)),
        }
        if message:
            event['msg'] = message
        self._emit(event)

    def v2_runner_on_ok(self, result):
        self._task(result, 'changed' if result.is_changed() else 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if self._fd is None:
            return
        message = _message(result)
        if ignore_errors:
            # ansible counts it as ignored and goes on; its own reports call the task passed.
            self._task(result, 'changed' if result.is_changed() else 'ok', message)
        elif _rescued(_attr(result, 'task', '_task')):
            self._task(result, 'rescued', message)
        else:
            self._task(result, 'failed', message)

    def v2_runner_on_skipped(self, result):
        self._task(result, 'skipped')

    def v2_runner_on_unreachable(self, result):
        self._task(result, 'unreachable', _message(result) if self._fd is not None else None)

    def v2_playbook_on_stats(self, stats):
        keys = ('ok', 'changed', 'unreachable', 'failed', 'skipped', 'rescued', 'ignored')
        total = dict.fromkeys(keys, 0)
        for host in stats.processed:
            summary = stats.summarize(host)
            # ansible's summary says `failures` where its recap prints `failed`.
            summary.setdefault('failed', summary.get('failures', 0))
            for k in keys:
                total[k] += int(summary.get(k, 0) or 0)
        total['e'] = 'recap'
        self._emit(total)
