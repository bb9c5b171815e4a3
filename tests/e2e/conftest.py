"""Fixtures: `imgpipe serve` as a real process on a free port with a temporary data folder.

On teardown every server still running gets SIGTERM and must exit 0 (the contract's clean shutdown)."""

import os

import pytest

import support


def pytest_report_header(config):
    return [f"imgpipe binary: {support.IMGPIPE_BIN}", f"image corpora: {support.CORPORA}"]


def pytest_sessionstart(session):
    if not support.IMGPIPE_BIN.is_file():
        raise pytest.UsageError(f"{support.IMGPIPE_BIN} does not exist: build first (scripts/build) or set IMGPIPE_BIN")
    if not (support.CORPORA / "valid").is_dir():
        raise pytest.UsageError(f"image corpora not found at {support.CORPORA}: set IMGPIPE_CORPORA_DIR")


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`-n`), the long tests first: each worker starts on one, and the short ones fill in around
    them, instead of a long test picked up last holding the run alone."""
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: each collects, and the controller deals out in order
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _service_disruption(request):
    """Lets support's restart_service & co. act only for a test marked disrupts_services, and keeps such a test out of
    a parallel run, where the tests beside it would lose the service it stops (scripts/test runs them alone)."""
    marked = request.node.get_closest_marker("disrupts_services") is not None
    if marked and os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.fail("a disrupts_services test must not run beside others: select it out of a parallel run "
                    "(-m 'not disrupts_services') and run it alone, as scripts/test does")
    support.may_disrupt_services = marked
    yield
    support.may_disrupt_services = False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "report_" + report.when, report)


@pytest.fixture
def start_server(tmp_path, request):
    """start_server(env=None, args=(), data_dir=None, admin_key=None, command="serve", tls_ca=None, ready=True) -> a started
    support.Server (ready=False: returned once it listens, without waiting for /readyz).

    The data folder defaults to a fresh one under tmp_path; pass the `data_dir` (and `admin_key`) of an earlier server
    to restart on the same data."""
    servers = []

    def start(env=None, args=(), data_dir=None, admin_key=None, command="serve", tls_ca=None, ready=True):
        n = len(servers)
        server = support.Server(data_dir or tmp_path / f"data-{n}", tmp_path / f"logs-{n}", env=env, args=args,
                                admin_key=admin_key, command=command, tls_ca=tls_ca)
        servers.append(server)
        return server.start(ready=ready)

    yield start

    call = getattr(request.node, "report_call", None)
    if call is not None and call.failed:
        for server in servers:  # shown under "Captured stdout teardown" of the failed test
            print(f"--- last log lines of serve on {server.data_dir} (start {server.starts}):\n{server.log_tail(25)}")
    problems = []
    for server in servers:
        if server.running:
            rc = server.stop()
            if rc != 0:
                problems.append(f"serve on {server.data_dir} exited {rc} after SIGTERM:\n{server.log_tail()}")
    assert not problems, "\n".join(problems)


@pytest.fixture
def server(start_server):
    """A running server on a fresh data folder (default config)."""
    return start_server()
