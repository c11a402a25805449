"""`agentplane tenant ...` and `agentplane user ...`: administration without the API.

These run as the operator on the database directly (no API key needed): that is how
the first owner of a fresh install is made.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from agentplane.auth.models import TENANT_RATE_LIMIT_PER_HOUR, normalize_email
from agentplane.db.pool import Database
from agentplane.db.setup import with_database
from agentplane.errors import ValidationFailed
from agentplane.tenancy import members, tenants, users
from agentplane.tenancy.users import NewUser
from agentplane.terminal import print_rows

tenant_app = typer.Typer(help="Tenants (administration without the API).", no_args_is_help=True)
user_app = typer.Typer(help="Users and their roles (administration).", no_args_is_help=True)

TenantRef = Annotated[
    str | None,
    typer.Option(
        "--tenant",
        envvar="AGENTPLANE_TENANT",
        show_envvar=False,
        help="The tenant: its slug or id (default: $AGENTPLANE_TENANT).",
    ),
]
PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the user's password from stdin (never from the command line). "
        "Without it the user signs in with API keys only.",
    ),
]


def read_password(enabled: bool) -> str | None:
    if not enabled:
        return None
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise ValidationFailed("password: nothing was read from stdin")
    return password


@tenant_app.command("create")
def tenant_create(
    name: Annotated[str, typer.Argument(help="The tenant's display name.")],
    slug: Annotated[str, typer.Option(help="URL-safe unique name, e.g. acme.")],
    owner_email: Annotated[str, typer.Option(help="Email of the first owner.")],
    plan: Annotated[str, typer.Option(help="free, pro or enterprise.")] = "free",
    rate_limit_per_hour: Annotated[
        int, typer.Option(min=0, help="Requests an hour, all the tenant's keys together.")
    ] = TENANT_RATE_LIMIT_PER_HOUR,
    token_limit: Annotated[
        int | None, typer.Option(min=0, help="Tokens a month (default: no limit).")
    ] = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Create a tenant and its first owner (a new user, or an existing one by email)."""
    try:
        email = normalize_email(owner_email)
    except ValueError:
        raise ValidationFailed("owner-email is not a valid email address") from None
    password = read_password(password_stdin)

    async def run(db: Database):
        async with db.app_connection() as conn:
            existing = await users.find_user_id(conn, email)
        owner = existing or NewUser(email=email, password=password)
        return await tenants.create_tenant(
            db,
            name=name,
            slug=slug,
            owner=owner,
            plan=plan,
            rate_limit_per_hour=rate_limit_per_hour,
            token_limit=token_limit,
        )

    tenant, user_id = with_database(run)
    typer.echo(f"tenant {tenant['slug']} created: {tenant['id']}")
    typer.echo(f"owner {email}: {user_id}")
    typer.echo(
        f"next: agentplane key create --tenant {tenant['slug']} --email {email} --name admin"
    )


JsonOut = Annotated[bool, typer.Option("--json", help="JSON (one array) instead of a table.")]


@tenant_app.command("list")
def tenant_list(as_json: JsonOut = False) -> None:
    """Every tenant: slug, id, plan, limits and members."""
    rows = with_database(tenants.list_tenants_admin)
    print_rows(
        rows,
        ["slug", "id", "name", "plan", "token_limit", "rate_limit_per_hour", "members"],
        as_json,
    )


@user_app.command("list")
def user_list(as_json: JsonOut = False, tenant: TenantRef = None) -> None:
    """The tenant's members with their roles."""

    async def run(db: Database):
        return await tenants.list_members_admin(db, await tenants.resolve_tenant_admin(db, tenant))

    print_rows(with_database(run), ["email", "user_id", "role", "full_name", "created_at"], as_json)


@user_app.command("create")
def user_create(
    email: Annotated[str, typer.Option(help="The user's email.")],
    role: Annotated[str, typer.Option(help="owner, admin, developer or viewer.")] = "developer",
    full_name: Annotated[str | None, typer.Option(help="The user's full name.")] = None,
    password_stdin: PasswordStdin = False,
    tenant: TenantRef = None,
) -> None:
    """Add a user to a tenant with a role (creating the user if the email is new)."""
    try:
        email = normalize_email(email)
    except ValueError:
        raise ValidationFailed("email is not a valid email address") from None
    password = read_password(password_stdin)

    async def run(db: Database):
        tenant_id = await tenants.resolve_tenant_admin(db, tenant)
        return await members.add_member(
            db, tenant_id, NewUser(email=email, password=password, full_name=full_name), role
        )

    user_id, created = with_database(run)
    typer.echo(
        f"user {email} {'created and ' if created else ''}added to {tenant} as {role}: {user_id}"
    )


FIRST_RUN = (
    "no tenant yet. Create the first owner and an API key:\n"
    "  echo 'a long passphrase' | agentplane tenant create 'My org' --slug my-org"
    " --owner-email you@example.com --password-stdin\n"
    "  agentplane key create --tenant my-org --email you@example.com --name admin"
)


def first_run_hint(owner_conninfo: str) -> str | None:
    """What `agentplane up` prints when there is no tenant yet; None otherwise."""
    from agentplane.db.endpoints import connect
    from agentplane.tenancy.store import has_tenants_sync

    with connect(owner_conninfo) as conn:
        return None if has_tenants_sync(conn) else FIRST_RUN
