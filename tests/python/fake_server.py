"""An in-process stand-in for hxemu-server, for client tests.

It implements the wire API with canned behaviour (no emulator): jobs finish
at once, traces follow a toy rule (flat at a level set by ``leak_v_leak``, a
sawtooth when ``threshold_enable`` is set and the leak is above threshold),
results are streamed in small chunks so that trace merging is exercised, and
the ``hxemu-user`` metadata of each call is remembered. The physics is tested
against the real server (test_seed_experiments.py), not here.
"""

from __future__ import annotations

import threading
import uuid
from concurrent import futures

import grpc
import numpy as np

from hxemu import _parameters
from hxemu._proto import experiment_pb2, service_pb2, service_pb2_grpc

TICKS_PER_SAMPLE = 4.25  # 34 ns MADC sample period in 8 ns ticks


def toy_result(experiment: experiment_pb2.Experiment) -> experiment_pb2.Result:
    table = _parameters.neuron_parameters()
    result = experiment_pb2.Result(runtime_ms=experiment.runtime_ms, chip_id=0)
    result.population_labels.extend(p.label for p in experiment.populations)
    n_samples = int(experiment.runtime_ms * 125_000 / TICKS_PER_SAMPLE)
    ticks = np.round(np.arange(n_samples) * TICKS_PER_SAMPLE).astype(np.uint64)
    for recording in experiment.recordings:
        population = experiment.populations[recording.population]
        neurons = list(recording.neurons) or list(range(population.size))
        for neuron in neurons:
            params = {name: info.default for name, info in table.items()}
            for p in population.parameters:
                params[p.name] = p.values[neuron] if len(p.values) > 1 else p.values[0]
            level = 0.6 * params["leak_v_leak"] + 100
            spiking = params["threshold_enable"] and \
                params["leak_v_leak"] > params["threshold_v_threshold"] + 400
            period = max(1, int(200 * 150 / max(params["leak_i_bias"], 1)))
            spike_ticks = np.arange(period, int(experiment.runtime_ms * 125_000), period)
            if recording.observable == experiment_pb2.OBSERVABLE_SPIKES:
                result.spike_trains.add(
                    population=recording.population, neuron=neuron, circuit=neuron,
                    times_ticks=spike_ticks.tolist() if spiking else [])
            else:
                if spiking:
                    phase = (ticks % period) / period
                    codes = 300 + 300 * phase
                else:
                    codes = np.full(n_samples, level)
                result.traces.add(
                    population=recording.population, neuron=neuron, circuit=neuron,
                    observable=recording.observable, times_ticks=ticks.tolist(),
                    codes=np.clip(codes, 0, 1023).astype(int).tolist())
    return result


class FakeService(service_pb2_grpc.ExperimentServiceServicer):
    def __init__(self, chunk_samples: int = 1000):
        self.chunk_samples = chunk_samples
        self.jobs = {}
        self.results = {}
        self.users = []
        self.authorizations = []  # "authorization" metadata of each call
        self.calibration_requests = []
        self.experiments = []  # submitted experiments, in order
        self.fail_next_job = None  # (code int, message) to let the next job FAIL
        self._lock = threading.Lock()

    def _user(self, context):
        metadata = dict(context.invocation_metadata())
        self.users.append(metadata.get("hxemu-user"))
        self.authorizations.append(metadata.get("authorization"))

    def _job(self, job_id, context):
        with self._lock:
            job = self.jobs.get(job_id)
        if job is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"job_id: no job {job_id!r}")
        return job

    def SubmitJob(self, request, context):
        self._user(context)
        experiment = request.experiment
        if not experiment.runtime_ms > 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "experiment.runtime_ms: must be > 0")
        table = _parameters.neuron_parameters()
        for i, population in enumerate(experiment.populations):
            for p in population.parameters:
                info = table.get(p.name)
                if info is None:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"experiment.populations[{i}].parameters: unknown "
                                  f"parameter '{p.name}'")
                for value in p.values:
                    if not info.min <= value <= info.max:
                        context.abort(
                            grpc.StatusCode.INVALID_ARGUMENT,
                            f"experiment.populations[{i}].parameters[{p.name}]: value "
                            f"{value} out of range [{info.min}, {info.max}]")
        self.experiments.append(experiment)
        job = service_pb2.Job(job_id=str(uuid.uuid4()), user=self.users[-1] or "",
                              runtime_ms=experiment.runtime_ms)
        if self.fail_next_job is not None:
            code, message = self.fail_next_job
            self.fail_next_job = None
            job.state = service_pb2.JOB_STATE_FAILED
            job.error.code, job.error.message = code, message
        else:
            job.state = service_pb2.JOB_STATE_SUCCEEDED
            job.progress_ms = experiment.runtime_ms
            self.results[job.job_id] = toy_result(experiment)
        with self._lock:
            self.jobs[job.job_id] = job
        return job

    def GetJob(self, request, context):
        self._user(context)
        return self._job(request.job_id, context)

    def WaitJob(self, request, context):
        self._user(context)
        return self._job(request.job_id, context)

    def CancelJob(self, request, context):
        self._user(context)
        return self._job(request.job_id, context)

    def GetResult(self, request, context):
        self._user(context)
        job = self._job(request.job_id, context)
        if job.state != service_pb2.JOB_STATE_SUCCEEDED:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"job_id: job {job.job_id} has no result")
        result = self.results[job.job_id]
        header = experiment_pb2.Result(chip_id=result.chip_id, runtime_ms=result.runtime_ms)
        header.population_labels.extend(result.population_labels)
        header.spike_trains.extend(result.spike_trains)
        yield service_pb2.ResultChunk(result=header)
        step = self.chunk_samples
        for trace in result.traces:
            for start in range(0, max(len(trace.codes), 1), step):
                piece = experiment_pb2.Result()
                piece.traces.add(population=trace.population, neuron=trace.neuron,
                                 circuit=trace.circuit, observable=trace.observable,
                                 times_ticks=trace.times_ticks[start:start + step],
                                 codes=trace.codes[start:start + step])
                yield service_pb2.ResultChunk(result=piece)

    def GetCalibration(self, request, context):
        """A toy calibration (not a measurement): circuit c gets
        leak_v_leak = 400 + c % 100 and leak_i_bias = 200 + targets.leak;
        chip 99 has none."""
        self._user(context)
        self.calibration_requests.append(request)
        from hxemu.v1 import calibration_pb2
        chip = request.chip_id if request.HasField("chip_id") else 0
        if chip == 99:
            context.abort(grpc.StatusCode.NOT_FOUND, "chip_id: no chip 99")
        calibration = calibration_pb2.Calibration(chip_id=chip)
        calibration.targets.CopyFrom(request.targets)
        leak = request.targets.leak if request.targets.HasField("leak") else 80
        for circuit in range(512):
            entry = calibration.circuits.add(circuit=circuit, success=True)
            entry.parameters.add(name="leak_v_leak", values=[400 + circuit % 100])
            entry.parameters.add(name="leak_i_bias", values=[200 + int(leak)])
        return calibration

    def GetServerInfo(self, request, context):
        self._user(context)
        info = service_pb2.ServerInfo(version="fake", num_chips=1,
                                      chip_model="HICANN-X v3 (fake)", max_runtime_ms=1000)
        for p in _parameters.neuron_parameters().values():
            info.neuron_parameters.add(name=p.name, kind=p.kind, min=p.min, max=p.max,
                                       default_value=p.default, unit=p.unit,
                                       description=p.description)
        return info


class FakeServer:
    """``with FakeServer() as fake: Client(fake.address)``"""

    def __init__(self, **kwargs):
        self.service = FakeService(**kwargs)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        service_pb2_grpc.add_ExperimentServiceServicer_to_server(self.service, self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"

    def __enter__(self) -> "FakeServer":
        self._server.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop(grace=None).wait()
