"""HTTP routes of the tenancy package: the tenant, members, invitations, projects.

Resources of another tenant are invisible (RLS), so asking for one by id is a 404.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Request, Response

from agentplane.auth.deps import DB, origin, requires
from agentplane.auth.models import Principal, TokensOut
from agentplane.tenancy import members, projects, signup, tenants
from agentplane.tenancy.models import (
    InvitationCreated,
    InvitationIn,
    InvitationOut,
    MemberOut,
    MemberPatch,
    ProjectIn,
    ProjectMemberIn,
    ProjectMemberOut,
    ProjectOut,
    ProjectPatch,
    RegisterIn,
    TenantOut,
    TenantPatch,
)

router = APIRouter(tags=["tenancy"])
# Signing up opens a login session: listed with the other ways in, under auth.
signup_router = APIRouter(tags=["auth"])
MANAGERS = {"owner", "admin"}
TenantReader = Annotated[Principal, Depends(requires())]
TenantManager = Annotated[Principal, Depends(requires("tenant:manage", roles=MANAGERS))]
Owner = Annotated[Principal, Depends(requires("tenant:manage", roles={"owner"}))]
MembersReader = Annotated[Principal, Depends(requires())]
MembersManager = Annotated[Principal, Depends(requires("members:manage", roles=MANAGERS))]
ProjectsReader = Annotated[Principal, Depends(requires("projects:read"))]
ProjectsWriter = Annotated[Principal, Depends(requires("projects:write"))]


def _no_content() -> Response:
    return Response(status_code=204)


# --- tenant ----------------------------------------------------------------------------


@router.get("/v1/tenant")
async def current_tenant(principal: TenantReader, db: DB) -> TenantOut:
    """The caller's tenant."""
    return TenantOut(**await tenants.get_tenant(db, principal, principal.tenant_id))


@router.get("/v1/tenants/{tenant_id}")
async def get_tenant(tenant_id: UUID, principal: TenantReader, db: DB) -> TenantOut:
    return TenantOut(**await tenants.get_tenant(db, principal, tenant_id))


@router.patch("/v1/tenants/{tenant_id}")
async def update_tenant(
    tenant_id: UUID, body: TenantPatch, principal: TenantManager, request: Request, db: DB
) -> TenantOut:
    changes = body.model_dump(exclude_unset=True)
    row = await tenants.update_tenant(db, principal, tenant_id, changes, origin(request))
    return TenantOut(**row)


@router.delete("/v1/tenants/{tenant_id}", status_code=204)
async def delete_tenant(tenant_id: UUID, principal: Owner, request: Request, db: DB) -> Response:
    """Soft-delete the tenant: its keys and sessions stop working at once."""
    await tenants.delete_tenant(db, principal, tenant_id, origin(request))
    return _no_content()


# --- members ---------------------------------------------------------------------------


@router.get("/v1/members")
async def list_members(principal: MembersReader, db: DB) -> list[MemberOut]:
    return [MemberOut(**r) for r in await members.list_members(db, principal)]


@router.get("/v1/members/{user_id}")
async def get_member(user_id: UUID, principal: MembersReader, db: DB) -> MemberOut:
    return MemberOut(**await members.get_member(db, principal, user_id))


@router.patch("/v1/members/{user_id}")
async def change_member(
    user_id: UUID, body: MemberPatch, principal: MembersManager, request: Request, db: DB
) -> MemberOut:
    """Change a member's role or extra permissions."""
    row = await members.change_member(
        db, principal, user_id, body.role, body.permissions, origin(request)
    )
    return MemberOut(**row)


@router.delete("/v1/members/{user_id}", status_code=204)
async def remove_member(
    user_id: UUID, principal: MembersManager, request: Request, db: DB
) -> Response:
    """Remove a member; their API keys and login sessions in this tenant go too."""
    await members.remove_member(db, principal, user_id, origin(request))
    return _no_content()


@router.post("/v1/invitations", status_code=201)
async def invite(
    body: InvitationIn, principal: MembersManager, request: Request, db: DB
) -> InvitationCreated:
    """Invite someone by email; they register with the returned token."""
    row, token = await members.invite(db, principal, body.email, body.role, origin(request))
    return InvitationCreated(**row, token=token)


@router.get("/v1/invitations")
async def list_invitations(principal: MembersManager, db: DB) -> list[InvitationOut]:
    return [InvitationOut(**r) for r in await members.list_invitations(db, principal)]


@router.delete("/v1/invitations/{invitation_id}", status_code=204)
async def cancel_invitation(
    invitation_id: UUID, principal: MembersManager, request: Request, db: DB
) -> Response:
    await members.cancel_invitation(db, principal, invitation_id, origin(request))
    return _no_content()


# --- projects --------------------------------------------------------------------------


@router.post("/v1/projects", status_code=201)
async def create_project(
    body: ProjectIn, principal: ProjectsWriter, request: Request, db: DB
) -> ProjectOut:
    return ProjectOut(
        **await projects.create_project(db, principal, body.model_dump(), origin(request))
    )


@router.get("/v1/projects")
async def list_projects(
    principal: ProjectsReader, db: DB, include_archived: bool = False
) -> list[ProjectOut]:
    return [ProjectOut(**r) for r in await projects.list_projects(db, principal, include_archived)]


@router.get("/v1/projects/{project_id}")
async def get_project(project_id: UUID, principal: ProjectsReader, db: DB) -> ProjectOut:
    return ProjectOut(**await projects.get_project(db, principal, project_id))


@router.patch("/v1/projects/{project_id}")
async def update_project(
    project_id: UUID, body: ProjectPatch, principal: ProjectsWriter, request: Request, db: DB
) -> ProjectOut:
    changes = body.model_dump(exclude_unset=True)
    row = await projects.update_project(db, principal, project_id, changes, origin(request))
    return ProjectOut(**row)


@router.delete("/v1/projects/{project_id}", status_code=204)
async def delete_project(
    project_id: UUID, principal: ProjectsWriter, request: Request, db: DB
) -> Response:
    await projects.delete_project(db, principal, project_id, origin(request))
    return _no_content()


@router.get("/v1/projects/{project_id}/members")
async def list_project_members(
    project_id: UUID, principal: ProjectsReader, db: DB
) -> list[ProjectMemberOut]:
    rows = await projects.list_project_members(db, principal, project_id)
    return [ProjectMemberOut(**r) for r in rows]


@router.put("/v1/projects/{project_id}/members/{user_id}")
async def put_project_member(
    project_id: UUID,
    user_id: UUID,
    body: ProjectMemberIn,
    principal: ProjectsWriter,
    request: Request,
    db: DB,
) -> ProjectMemberOut:
    row = await projects.put_project_member(
        db, principal, project_id, user_id, body.role, origin(request)
    )
    return ProjectMemberOut(**row)


@router.delete("/v1/projects/{project_id}/members/{user_id}", status_code=204)
async def remove_project_member(
    project_id: UUID, user_id: UUID, principal: ProjectsWriter, request: Request, db: DB
) -> Response:
    await projects.remove_project_member(db, principal, project_id, user_id, origin(request))
    return _no_content()


@signup_router.post("/v1/auth/register", status_code=201)
async def register(body: RegisterIn, request: Request, db: DB) -> TokensOut:
    """Create a tenant with the caller as its owner, or join one with an invitation, as
    far as the server's AGENTPLANE_REGISTRATION (open, invite, closed) allows."""
    signup.check_registration(request.app.state.settings.registration, body)
    return await signup.register(db, body, origin(request))
