"""A round in a prefork pool child (a daemon process) must not try to start DataLoader
workers: multiprocessing forbids it and the round would fail at its first batch."""
import multiprocessing

from reviewapp.services.round_data import round_train_config
from reviewapp.services.round_pipeline import _loader_workers_allowed


def _workers_in_child(queue):
    config = round_train_config("arcface", {"num_workers": 3})
    queue.put(_loader_workers_allowed(config).num_workers)


def test_a_daemon_process_loads_without_workers():
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_workers_in_child, args=(queue,), daemon=True)
    child.start()
    child.join(60)
    assert queue.get(timeout=5) == 0


def test_a_normal_process_keeps_its_workers():
    config = round_train_config("arcface", {"num_workers": 3})
    assert _loader_workers_allowed(config).num_workers == 3
