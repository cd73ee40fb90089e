"""The `/my-credits` page, mounted at the top level by config/urls.py."""

from django.urls import path

from . import views

urlpatterns = [
    path("my-credits", views.my_credits_page, name="my-credits"),
]
