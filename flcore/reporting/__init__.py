"""Reporting: report.md and report.html, their figures, and the tables the command line prints."""
