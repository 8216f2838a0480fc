"""The members' web page: static files served by the local endpoint."""
