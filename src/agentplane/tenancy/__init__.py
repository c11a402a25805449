"""Tenants, users, memberships (with roles), invitations and projects."""
