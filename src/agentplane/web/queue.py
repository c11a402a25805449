"""placeholder"""

from fastapi import APIRouter

from agentplane.web.http import WebRoute

router = APIRouter(route_class=WebRoute, include_in_schema=False)
