#!/bin/sh
# First-run setup of the shop with wp-cli. Every step looks before it changes anything, so running
# this again (it runs after every sync) changes nothing. The shop defaults (currency, country, Cash on
# Delivery, pages, sample product) are applied once, recorded by the storeops_setup option, and left
# to the owner afterwards; the store name follows the store entry in Git.
set -eu
cd /var/www/html
log() { echo "setup: $*"; }

# The WordPress container writes wp-config.php on its first start; MariaDB may still be starting.
tries=0
until [ -f wp-config.php ] && wp db check --quiet >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -gt 90 ]; then
    log "wp-config.php or the database is still not there after 7.5 minutes"
    exit 1
  fi
  sleep 5
done

if wp core is-installed; then
  log "WordPress already installed"
else
  log "installing WordPress for $STORE_URL"
  # The password goes through stdin (--prompt), never into the process list.
  printf '%s\n' "$ADMIN_PASSWORD" | wp core install --url="$STORE_URL" --title="$STORE_NAME" \
    --admin_user="$ADMIN_USER" --admin_email="$ADMIN_EMAIL" --skip-email --prompt=admin_password
fi

# wp option update leaves an unchanged value alone (WordPress compares before writing).
wp option update blogname "$STORE_NAME"

if ! wp plugin is-installed woocommerce; then
  log "installing WooCommerce $WOOCOMMERCE_VERSION"
  wp plugin install woocommerce --version="$WOOCOMMERCE_VERSION"
fi
if ! wp plugin is-active woocommerce; then
  wp plugin activate woocommerce
fi

if [ "$(wp option get storeops_setup 2>/dev/null || true)" = "1" ]; then
  log "shop already set up; nothing else to do"
  exit 0
fi

log "first-run shop defaults"
if [ "$(wp option get permalink_structure)" != "/%postname%/" ]; then
  wp rewrite structure '/%postname%/' --hard
fi
wp option update woocommerce_currency "$CURRENCY"
wp option update woocommerce_default_country "$COUNTRY"
# New WooCommerce shops start in "coming soon" mode, which hides the shop from customers.
wp option update woocommerce_coming_soon no
wp option update woocommerce_enable_guest_checkout yes
wp option update woocommerce_cod_settings --format=json \
  '{"enabled":"yes","title":"Cash on delivery","description":"Pay with cash upon delivery.","instructions":"Pay with cash upon delivery.","enable_for_methods":[],"enable_for_virtual":"yes"}'
# Shop, cart, checkout and my-account pages; creates only the missing ones.
wp wc tool run install_pages --user="$ADMIN_USER"

if [ -z "$(wp post list --post_type=product --name="$PRODUCT_SLUG" --post_status=any --format=ids)" ]; then
  log "creating the sample product"
  # Virtual: checkout needs no shipping zone, so Cash on Delivery works right away.
  wp wc product create --user="$ADMIN_USER" --name="$PRODUCT_NAME" --slug="$PRODUCT_SLUG" \
    --regular_price="$PRODUCT_PRICE" --virtual=true --status=publish --porcelain
fi

wp option update storeops_setup 1
log "done: $STORE_URL"
