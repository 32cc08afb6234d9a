"""A customer's checkout through a Medusa store's Store API, as the Medusa tests run it on loopback
(tests/integration/test_medusa_app.py) and through the ingress (tests/e2e/test_medusa_node.py)."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["ok", "place_order"]


def ok(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a successful answer (an assertion naming the request otherwise)."""
    request = response.request
    assert response.status_code < 300, f"{request.method} {request.url}: {response.status_code} {response.text[:2000]}"
    body = response.json()
    assert isinstance(body, dict)
    return body


def place_order(store: httpx.Client, region_id: str, email: str) -> str:
    """Buy the bootstrap's sample product with the store's shipping option and the system payment
    provider (`store` sends the publishable key); returns the order's id."""
    products = ok(store.get("/store/products", params={"region_id": region_id}))["products"]
    sample = next(p for p in products if p["handle"] == "sample-product")
    variant = sample["variants"][0]
    assert variant["calculated_price"]["calculated_amount"] == 20

    cart = ok(store.post("/store/carts", json={"region_id": region_id}))["cart"]
    cart_path = f"/store/carts/{cart['id']}"
    ok(store.post(f"{cart_path}/line-items", json={"variant_id": variant["id"], "quantity": 1}))
    address = {"first_name": "Ada", "last_name": "Buyer", "address_1": "1 Main Street", "city": "Springfield",
               "postal_code": "12345", "country_code": "us"}  # fmt: skip
    ok(store.post(cart_path, json={"email": email, "shipping_address": address, "billing_address": address}))

    options = ok(store.get("/store/shipping-options", params={"cart_id": cart["id"]}))["shipping_options"]
    assert [o["name"] for o in options] == ["Standard shipping"]
    cart = ok(store.post(f"{cart_path}/shipping-methods", json={"option_id": options[0]["id"]}))["cart"]
    assert cart["total"] == 25  # 20 for the product, 5 for shipping, no tax rate configured

    collection = ok(store.post("/store/payment-collections", json={"cart_id": cart["id"]}))["payment_collection"]
    ok(store.post(f"/store/payment-collections/{collection['id']}/payment-sessions",
                  json={"provider_id": "pp_system_default"}))  # fmt: skip
    completed = ok(store.post(f"{cart_path}/complete"))
    assert completed["type"] == "order", completed
    order_id = completed["order"]["id"]
    assert isinstance(order_id, str)
    return order_id
