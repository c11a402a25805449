"""Workflows: the list, a workflow's versions, definition and DAG, and a form built
from its inputs that starts a run (each field's problem shown beside it)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from agentplane.errors import NotFound, ValidationFailed
from agentplane.web import graph, http
from agentplane.web.http import Posted, WebRoute, WebUser
from agentplane.web.templating import page
from agentplane.workflows import definitions, runs
from agentplane.workflows.models import RunIn, Workflow

router = APIRouter(route_class=WebRoute, include_in_schema=False)
User = Annotated[WebUser, Depends(http.signed_in)]
Action = Annotated[Posted, Depends(http.posted)]


@router.get("/workflows")
async def list_workflows(request: Request, user: User) -> HTMLResponse:
    http.need(user, "workflows:read")
    async with http.db_of(request).tenant_connection(user.tenant_id) as conn:
        found = await definitions.list_workflows(conn)
    return await page(request, user, "workflows.html", title="Workflows", workflows=found)


def _version(request: Request) -> int | None:
    text = request.query_params.get("version", "")
    if not text:
        return None
    if not text.isdigit() or len(text) > 9:
        raise NotFound(f"no version {text[:20]!r}")
    return int(text)


def _picture(workflow: Workflow) -> Any:
    deps = definitions.workflow_graph(workflow)
    tasks = workflow.definition["tasks"]
    nodes = [graph.Node(key=n, label=n, sub=tasks[n]["agent"]) for n in deps]
    return graph.draw(nodes, [(u, n) for n, ups in deps.items() for u in ups],
                      name=f"the tasks of {workflow.name}")


def _inputs(workflow: Workflow) -> list[dict[str, Any]]:
    return [
        {"name": name, "required": spec.get("required", True) and spec.get("default") is None,
         "description": spec.get("description"), "default": spec.get("default")}
        for name, spec in workflow.definition.get("inputs", {}).items()
    ]


async def _show(request: Request, user: WebUser, name: str, *, status: int = 200,
                values: dict[str, str] | None = None, errors: dict[str, str] | None = None,
                error: str | None = None) -> HTMLResponse:
    http.need(user, "workflows:read")
    if len(name) > 100:
        raise NotFound("no such workflow")
    async with http.db_of(request).tenant_connection(user.tenant_id) as conn:
        workflow = await definitions.get_workflow(conn, name, _version(request))
        versions = await definitions.list_versions(conn, name)
        recent = (await runs.list_runs(conn, workflow=workflow.name, limit=10)).items \
            if user.can("runs:read") else []
    return await page(
        request, user, "workflow.html", status=status, title=workflow.name,
        workflow=workflow, versions=versions, dag=_picture(workflow), inputs=_inputs(workflow),
        values=values or {}, errors=errors or {}, error=error, runs=recent,
        can_start=user.can("runs:write", "agents:execute"),
    )


@router.get("/workflows/{name}")
async def show_workflow(request: Request, user: User, name: str) -> HTMLResponse:
    return await _show(request, user, name)


@router.post("/workflows/{name}/runs")
async def start_run(request: Request, action: Action, name: str) -> Response:
    """Start a run with the form's inputs; a refused one shows the form again with each
    field's problem, and nothing is written."""
    user = action.user
    http.need(user, "runs:write", "agents:execute")
    version = action.form.text("version")
    values = {k[len("input."):]: v for k, v in action.form.items() if k.startswith("input.")}
    inputs = {k: v for k, v in values.items() if v.strip() != ""}
    db = http.db_of(request)
    try:
        body = RunIn(workflow=name[:100], version=int(version) if version.isdigit() else None,
                     inputs=inputs)
        async with db.tenant_connection(user.tenant_id) as conn:
            run = await runs.create_run(conn, db, user.principal, body)
    except ValidationFailed as exc:
        errors: dict[str, str] = {}
        for problem in exc.extra.get("errors", []):
            field = str(problem.get("field", ""))
            key = field.removeprefix("inputs.")
            errors[key if key in values else "_"] = str(problem.get("message", "invalid"))
        return await _show(request, user, name, status=422, values=values, errors=errors,
                           error=exc.detail)
    return http.redirect(request, f"/runs/{run.id}?notice=started")
