"""Views: terminal tables and progress (rich), the HTML report, and the charts (matplotlib)."""
