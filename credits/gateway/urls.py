from django.urls import path

from . import views

urlpatterns = [
    path("authorize", views.authorize, name="gateway-authorize"),
    path("settle", views.settle, name="gateway-settle"),
    path("settle/batch", views.settle_batch, name="gateway-settle-batch"),
]
