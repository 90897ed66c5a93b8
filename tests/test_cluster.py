"Cluster backends with real processes: a local cluster, a scheduler and workers started as separate hosts would, failures."
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import need

from mlnb import cluster as C
from mlnb.errors import MlnbError

DASK = Path(sys.executable).parent/'dask'


def _worker_pid():
    import os
    return os.getpid()


def test_local_two_workers():
    "connect('local', n_workers=2): two worker processes with one thread each, each running work."
    with C.connect('local', n_workers=2) as client:
        client.wait_for_workers(2, timeout=30)
        futs = [client.submit(_worker_pid, pure=False, workers=[w]) for w in client.scheduler_info()['workers']]
        pids = set(client.gather(futs))
        info = C.cluster_info(client)
        cluster = client.cluster
    assert len(pids) == 2 and os.getpid() not in pids
    assert info['backend'] == 'local' and info['n_workers'] == 2 and info['total_threads'] == 2
    assert [w['nthreads'] for w in info['workers']] == [1, 1]
    assert {w['pid'] for w in info['workers']} == pids
    assert info['dashboard'] is None
    assert 'workers    2: 2 threads' in C.describe_cluster(info)
    assert cluster.status.name == 'closed'  # the client closed the cluster it owned


def _start(cmd, log):
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(procs):
    for p in procs:
        if p.poll() is None:
            try: os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError: pass
    for p in procs:
        try: p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


def test_external_scheduler(tmp_path):
    "A `dask scheduler` and two `dask worker` processes started apart from mlnb: connect('tcp://...') sees both workers."
    need('dask CLI', DASK.exists(), f'{DASK} not found')
    sfile, log = tmp_path/'scheduler.json', open(tmp_path/'dask.log', 'w')
    procs = []
    try:
        procs.append(_start([str(DASK), 'scheduler', '--host', '127.0.0.1', '--port', '0', '--no-dashboard',
                             '--dashboard-address', ':0', '--scheduler-file', str(sfile)], log))
        deadline = time.monotonic() + 30
        while not sfile.exists() or not sfile.read_text().strip():
            assert procs[0].poll() is None, (tmp_path/'dask.log').read_text()
            assert time.monotonic() < deadline, 'the scheduler wrote no scheduler file in 30 s'
            time.sleep(0.1)
        time.sleep(0.1)
        address = json.loads(sfile.read_text())['address']
        assert address.startswith('tcp://127.0.0.1:')
        for i in range(2):
            procs.append(_start([str(DASK), 'worker', address, '--nthreads', '1', '--name', f'host{i}', '--no-dashboard',
                                 '--local-directory', str(tmp_path/f'w{i}')], log))
        with C.connect(address) as client:
            client.wait_for_workers(2, timeout=30)
            info = C.cluster_info(client)
        assert info['scheduler'] == address and info['backend'] == 'address'
        assert [w['name'] for w in info['workers']] == ['host0', 'host1']
        assert [w['nthreads'] for w in info['workers']] == [1, 1]
        assert len({w['pid'] for w in info['workers']}) == 2
        assert {w['pid'] for w in info['workers']}.isdisjoint({p.pid for p in procs} | {os.getpid()})  # workers under nannies
    finally:
        _stop(procs[::-1])
        log.close()
    assert all(p.poll() is not None for p in procs)


def test_unreachable_scheduler_fails_fast():
    "Nothing listens on port 1: a ClusterError that says what to check, within the default timeout."
    t = time.monotonic()
    with pytest.raises(C.ClusterError,
                       match=r'cannot reach the Dask scheduler at tcp://127\.0\.0\.1:1: .* is `dask scheduler` running') as e:
        C.connect('tcp://127.0.0.1:1')
    assert time.monotonic() - t < 15
    assert (e.value.exit_code, e.value.http_status) == (2, 503)  # `mlnb: error: ...` exit 2; a server answers 503


def test_cuda_and_auto_without_gpu():
    "No GPU here: 'cuda' says what is missing and how it looked; 'auto' falls back to a local cluster and says why."
    if C.gpu_count() > 0: pytest.skip('this machine has a GPU')
    with pytest.raises(C.ClusterError, match='no NVIDIA GPU was found') as e:
        C.connect('cuda')
    assert 'nvidia-ml-py' in str(e.value) and 'nvidia-smi' in str(e.value)
    if importlib.util.find_spec('dask_cuda') is None: assert "pip install 'mlnb[gpu]'" in str(e.value)
    with C.connect('auto', n_workers=1) as client:
        assert client.mlnb_backend == 'local'
        assert client.mlnb_reason.startswith('no NVIDIA GPU found')
        assert C.cluster_info(client)['n_workers'] == 1


def test_gateway_without_package():
    if importlib.util.find_spec('dask_gateway') is not None: pytest.skip('dask-gateway is installed')
    with pytest.raises(C.ClusterError, match=r"pip install 'mlnb\[gateway\]'"):
        C.connect('gateway')


def test_unknown_spec():
    with pytest.raises(C.UnknownCluster) as e:
        C.connect('kubernetes')
    msg = str(e.value)
    assert "unknown cluster 'kubernetes'" in msg and 'tcp://host:port' in msg
    assert all(n in msg for n in ('local', 'cuda', 'gateway', 'auto'))
    assert isinstance(e.value, C.ClusterError) and isinstance(e.value, MlnbError) and e.value.exit_code == 2


FAKE_DASK_CUDA = '''
"A stand-in for dask_cuda.LocalCUDACluster on a CPU machine: it sets each worker's environment as the real one does."
import copy
from distributed import LocalCluster

class LocalCUDACluster(LocalCluster):
    def __init__(self, CUDA_VISIBLE_DEVICES='0,1', n_workers=None, threads_per_worker=1, **kw):
        self.devices = CUDA_VISIBLE_DEVICES.split(',')
        super().__init__(n_workers=0, threads_per_worker=threads_per_worker, processes=True, **kw)
        self.scale(n_workers or len(self.devices))
        self.sync(self._correct_state)

    def new_worker_spec(self):
        name = min(set(self.devices) - set(self.worker_spec))
        i, spec = self.devices.index(name), copy.deepcopy(self.new_spec)
        spec['options'].update({'env': {'CUDA_VISIBLE_DEVICES': ','.join(self.devices[i:] + self.devices[:i])}})  # replaces env
        return {name: spec}
'''


def test_cuda_pinning_with_stand_in(tmp_path, monkeypatch):
    "The 'cuda' backend marks workers for pinning though LocalCUDACluster replaces their env (a stand-in with its behaviour, on CPU)."
    (tmp_path/'dask_cuda').mkdir()
    (tmp_path/'dask_cuda'/'__init__.py').write_text(FAKE_DASK_CUDA)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(C, '_probe_gpus', lambda environ=None: (2, 'stand-in'))
    monkeypatch.setitem(sys.modules, 'dask_cuda', None)  # so that monkeypatch puts sys.modules back as it was afterwards,
    del sys.modules['dask_cuda']                          # while the import inside connect finds the stand-in
    with C.connect('cuda') as client:
        client.wait_for_workers(2, timeout=30)
        cvd = client.run(os.getenv, 'CUDA_VISIBLE_DEVICES')
        pins = client.run(C.pinned_gpu_env)
        assert client.mlnb_backend == 'cuda'
    assert sorted(cvd.values()) == ['0,1', '1,0']
    assert sorted(p['CUDA_VISIBLE_DEVICES'] for p in pins.values()) == ['0', '1']
    assert all(pins[a] == {'CUDA_VISIBLE_DEVICES': cvd[a].split(',')[0]} for a in cvd)


@pytest.mark.gpu
def test_cuda_cluster_pins_one_gpu_per_worker():
    "On a GPU machine: one worker per GPU, each pinning its Runs to its own first device."
    if C.gpu_count() == 0: pytest.skip('no NVIDIA GPU')
    if importlib.util.find_spec('dask_cuda') is None: pytest.skip("dask-cuda not installed (pip install 'mlnb[gpu]')")
    n = C.gpu_count()
    with C.connect('cuda') as client:
        client.wait_for_workers(n, timeout=120)
        cvd = client.run(os.getenv, 'CUDA_VISIBLE_DEVICES')
        pins = client.run(C.pinned_gpu_env)
        info = C.cluster_info(client)
    assert len(cvd) == n == info['n_workers'] == info['total_gpus']
    firsts = [v.split(',')[0] for v in cvd.values()]
    assert len(set(firsts)) == n  # each worker has its own first device
    for a, v in cvd.items():
        assert pins[a] == ({'CUDA_VISIBLE_DEVICES': v.split(',')[0]} if n > 1 else {})
