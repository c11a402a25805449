"""Database: the embedded server, endpoints, pools, migrations."""
