"""The admin's commands that are not a program of their own: init, show, status."""
