"""One call per tag through a client generated from the server's own /openapi.json.

scripts/e2e generates the client (openapi-python-client) into a folder, puts it on the path,
and runs this against the e2e server: if the document and the server disagree on a shape, the
generated models fail to parse the answer and this exits non-zero.

    RDEV_E2E_URL, RDEV_E2E_API_KEY, RDEV_E2E_PROJECT   as for the e2e suite
    RDEV_CLIENT_DIR                                      the folder holding the `rdev_client` package
"""

import os
import sys

sys.path.insert(0, os.environ["RDEV_CLIENT_DIR"])

from rdev_client.api.api_keys import list_api_keys  # noqa: E402
from rdev_client.api.audit import list_audit  # noqa: E402
from rdev_client.api.commands import enqueue_command, get_command, run_shell  # noqa: E402
from rdev_client.api.files import list_files  # noqa: E402
from rdev_client.api.health import get_health, get_ready  # noqa: E402
from rdev_client.api.projects import get_project, list_projects  # noqa: E402
from rdev_client.api.sessions import create_session, run_in_session  # noqa: E402
from rdev_client.api.terminal import create_ticket  # noqa: E402
from rdev_client.api.webhooks import list_webhooks  # noqa: E402
from rdev_client.client import AuthenticatedClient, Client  # noqa: E402
from rdev_client.models import CreateSessionRequest, EnqueueRequest, ShellRequest  # noqa: E402

URL = os.environ["RDEV_E2E_URL"]
KEY = os.environ["RDEV_E2E_API_KEY"]
PROJECT = os.environ.get("RDEV_E2E_PROJECT", "hello")


def expect(what, value, kind):
    if not isinstance(value, kind):
        sys.exit(f"generated client: {what} gave {value!r}, expected a {kind.__name__}")
    print(f"generated client: {what}: ok")
    return value


def main():
    public = Client(base_url=URL)
    client = AuthenticatedClient(base_url=URL, token=KEY, prefix="", auth_header_name="X-API-Key")

    from rdev_client.models import Health, Readiness, ProjectList, Project, Execution, Command
    from rdev_client.models import ApiKeyList, AuditList, WebhookList

    expect("health: get_health", get_health.sync(client=public), Health)
    expect("health: get_ready", get_ready.sync(client=public), Readiness)

    projects = expect("projects: list_projects", list_projects.sync(client=client), ProjectList)
    if PROJECT not in [p.id for p in projects.projects]:
        sys.exit(f"generated client: {PROJECT} is not among {[p.id for p in projects.projects]}")
    expect("projects: get_project", get_project.sync(PROJECT, client=client), Project)

    ran = expect(
        "commands: run_shell",
        run_shell.sync(PROJECT, client=client, body=ShellRequest(command="echo generated")),
        Execution,
    )
    if ran.stdout != "generated\n" or ran.exit_code != 0:
        sys.exit(f"generated client: run_shell ran {ran!r}")
    queued = expect(
        "commands: enqueue_command",
        enqueue_command.sync(PROJECT, client=client, body=EnqueueRequest(command="true")),
        Command,
    )
    expect("commands: get_command", get_command.sync(queued.id, client=client), Command)

    expect("api-keys: list_api_keys", list_api_keys.sync(client=client), ApiKeyList)
    audit = expect("audit: list_audit", list_audit.sync(client=client, project_id=PROJECT), AuditList)
    if not any(str(entry.id) == str(ran.execution_id) for entry in audit.entries):
        sys.exit("generated client: the run is not in the audit log")
    expect("webhooks: list_webhooks", list_webhooks.sync(client=client), WebhookList)

    from rdev_client.models import FileListing, Session, SessionExecution

    expect("files: list_files", list_files.sync(PROJECT, client=client), FileListing)

    session = expect(
        "sessions: create_session",
        create_session.sync(PROJECT, client=client, body=CreateSessionRequest()),
        Session,
    )
    in_session = expect(
        "sessions: run_in_session",
        run_in_session.sync(session.id, client=client, body=ShellRequest(command="export G=1", stdin="x")),
        SessionExecution,
    )
    if in_session.session.env.additional_properties.get("G") != "1":
        sys.exit(f"generated client: run_in_session left {in_session.session!r}")

    from rdev_client.models import IssuedTicket

    ticket = expect("terminal: create_ticket", create_ticket.sync(PROJECT, client=client), IssuedTicket)
    if not ticket.ticket.startswith("rdt_"):
        sys.exit(f"generated client: create_ticket gave {ticket!r}")


if __name__ == "__main__":
    main()
