"""Functions, views, triggers and row-level security policies live in their packages'
sql/ files; this revision applies them all.

The files hold the definitions that revisions 0001 to 0014 left, so applying them
changes nothing; from here on a revision that changes a definition changes its file and
names it (see agentplane.db.migrations). Tables, types, indexes, grants and data stay in
revisions.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02
"""

from agentplane.db.migrations import apply_sql

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# Each file with the digest of what this revision applied, in the order applied.
sql_files = {
    "db/sql/updated_at.sql": "60b0b376d0fd1f2401afc697c3eaac60c8bfde7497f52cd84d88baa8d76e79e6",
    "tenancy/sql/policies.sql": "b4006bc7a801612463f7cf30a1ebb07bbebc58a071051948b86d9e273f5129d9",
    "auth/sql/lookups.sql": "1ee5eca4072122faedf1a2dc700befb71297d857922408a714b77ae0cc20f1f1",
    "auth/sql/notify.sql": "5e4f5a1f1f3315cfe13ee2a32bc49ffeb534a25def62672d5fd579987a64f74d",
    "queue/sql/jobs.sql": "88f55167620e81b9344911304d9e091fd81b136a4353d55dc88730a920f35fb9",
    "queue/sql/limits.sql": "37f1ae837be3975c1341935892c438276947e502186e8acaa43f2d817401ac24",
    "queue/sql/schedules.sql": "ca000c906636c25c23288b8fd1442cc9dd0ec3e5c445899c824e8e63a7b20c1a",
    "llm/sql/prices.sql": "d157fa3f16c46eeb7f75d6a1192afa04aaa7eec65ebf8ede2cfa3de6d3d575cc",
    "usage/sql/budgets.sql": "f70a90873bc1757764aa8fdb0acc0b9d6faf6078b0562efd8feb39ff8634f829",
    "usage/sql/partitions.sql": "f5b0c0daa0c695f7408a965d34499c6219285b2e6952a1d969d02645d2d2b50a",
    "usage/sql/rollups.sql": "83d17c819935ce0e1aeb3576f10d260a5faad9b1be234c6d354dccd51fd00f8a",
    "usage/sql/alerts.sql": "771d3b34686b280bde4ebacab7e8dacc8baa48cfec27f20b39486cadc2e5f86b",
    "usage/sql/views.sql": "9e8b2514cbb5183bab0e74696c8e07e1c10ac5dadcf92dfb1bc2c09875cd8298",
    "events/sql/partitions.sql": "3eb7614319209acb712d9465b438a923b17407a41af2f98bc0b64e8bf1f2badd",
    "events/sql/functions.sql": "5cc215f87a8e13f9c2b2ca1fb4b6af3b4cf242063bde60c5404f79afa10f8077",
    "agents/sql/instances.sql": "baf36a6cb82ef69f7108cfc0edcea8d7da48d298222769ea44476d50ce4c6181",
    "agents/sql/totals.sql": "be6f102b9c24964b05a6774888bdb16a98718c91f7d09932d4537578b0d1727b",
    "runtime/sql/batches.sql": "70f19990cb60fc47f6e8ada81be15a492a75210778610a133d5c3d40ebb883a8",
    "ops/sql/maintenance.sql": "24c5ad1bdc843ee37aeec1851b4bdf8afa8329409262cd6560cde8129c5da1d9",
}


def upgrade() -> None:
    apply_sql(revision, sql_files)


def downgrade() -> None:
    """Nothing to undo: the files held what 0014 left (a later revision that changes a
    file puts back what it replaced in its own downgrade)."""
