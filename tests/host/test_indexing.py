"""What the host refuses at start-up, with a message naming the problem."""

from __future__ import annotations

import azure.functions as func
import httpx
import pytest

from sandbox.host import LocalHost
from sandbox.host.config import HostConfigurationError
from sandbox.host.index import index_functions

HOST_JSON = {"version": "2.0"}


def queue_app(queue_name: str) -> func.FunctionApp:
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name=queue_name, connection="AzureWebJobsStorage")
    def worker(msg: func.QueueMessage) -> None:
        return None

    return app


@pytest.mark.parametrize("name", ["Upper", "ab", "a--b", "-ab", "ab-", "x" * 64, "under_score"])
def test_invalid_queue_names_are_refused(name: str) -> None:
    with pytest.raises(HostConfigurationError, match="queue name"):
        index_functions(queue_app("%Q%"), {"Q": name})


def test_queue_name_setting_must_exist() -> None:
    with pytest.raises(HostConfigurationError, match="Q"):
        index_functions(queue_app("%Q%"), {})


def test_valid_queue_name_resolves() -> None:
    [entry] = index_functions(queue_app("%Q%"), {"Q": "writeback-events"})
    assert entry.queue is not None
    assert (entry.queue.queue_name, entry.queue.connection) == ("writeback-events", "AzureWebJobsStorage")


def test_unsupported_binding_stops_the_host() -> None:
    app = func.FunctionApp()

    @app.route(route="t")
    @app.table_input(arg_name="row", table_name="T", connection="AzureWebJobsStorage")
    def reads_table(req: func.HttpRequest, row: str) -> func.HttpResponse:
        return func.HttpResponse(row)

    with pytest.raises(HostConfigurationError, match="table"):
        index_functions(app, {})


def test_invalid_timer_schedule_stops_the_host() -> None:
    app = func.FunctionApp()

    @app.timer_trigger(arg_name="timer", schedule="*/5 * * * *")
    def five_fields(timer: func.TimerRequest) -> None:
        return None

    with pytest.raises(HostConfigurationError, match="five_fields"), LocalHost(app, {}, host_json=HOST_JSON):
        pass


def test_an_app_indexed_twice_gets_a_clear_error() -> None:
    app = func.FunctionApp()

    @app.route(route="once", auth_level=func.AuthLevel.ANONYMOUS)
    def once(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("ok")

    app.get_functions()
    with pytest.raises(HostConfigurationError, match="once per app object"), LocalHost(app, {}, host_json=HOST_JSON):
        pass


def test_app_module_is_imported_after_the_settings_are_in_the_environment() -> None:
    with LocalHost("tests.host.import_time_app", {"IMPORT_TIME_SETTING": "from settings"}, host_json=HOST_JSON) as host:
        assert httpx.get(f"{host.url}/api/seen").text == "from settings"
