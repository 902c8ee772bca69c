"""Small reusable widgets: plots, a following log view and config form fields."""
