"""`django.contrib.admin` with our site as its default (config/admin_site.py). Apart from the
site so that loading the app registry imports no model-dependent module."""

from django.contrib.admin.apps import AdminConfig


class BillingAdminConfig(AdminConfig):
    default_site = "config.admin_site.BillingAdminSite"
