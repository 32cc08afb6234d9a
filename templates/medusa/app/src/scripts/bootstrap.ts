/**
 * The store's first configuration, run with `medusa exec ./src/scripts/bootstrap.js` (built) or
 * `medusa exec ./src/scripts/bootstrap.ts` (source), after `medusa db:migrate`.
 *
 * Idempotent: every step looks for what it would create and creates only what is missing; it never
 * changes or deletes what exists (an owner's edits in the admin survive a second run). Things are
 * found by stable names: the region by its first country, the stock location, fulfillment set and
 * shipping option by name, the product by handle, the admin by e-mail; the publishable key is the
 * oldest one not revoked.
 *
 * Environment (all optional but the admin's):
 *   STORE_NAME            the store's name, set only while Medusa's default name is still there
 *   STORE_CURRENCY        ISO 4217 code of the region's currency (default usd)
 *   STORE_COUNTRIES       comma-separated ISO 3166-1 alpha-2 codes of the region (default us)
 *   ADMIN_EMAIL           the admin user's e-mail; no admin is created when unset
 *   ADMIN_PASSWORD        its password (required with ADMIN_EMAIL; used only when the user is created)
 *   STORE_BOOTSTRAP_OUTPUT  file to write the result to as JSON (publishable key, ids), for a Job
 *                         to hand on; the publishable key is public by design (storefronts send it)
 */
import { writeFileSync } from "node:fs"

import type { ExecArgs, MedusaContainer } from "@medusajs/framework/types"
import { ContainerRegistrationKeys, Modules, ProductStatus } from "@medusajs/framework/utils"
import {
  createApiKeysWorkflow,
  createInventoryLevelsWorkflow,
  createLocationFulfillmentSetWorkflow,
  createProductsWorkflow,
  createRegionsWorkflow,
  createSalesChannelsWorkflow,
  createServiceZonesWorkflow,
  createShippingOptionsWorkflow,
  createShippingProfilesWorkflow,
  createStockLocationsWorkflow,
  createTaxRegionsWorkflow,
  createUserAccountWorkflow,
  linkSalesChannelsToApiKeyWorkflow,
  linkSalesChannelsToStockLocationWorkflow,
  setAuthAppMetadataWorkflow,
  updateStoresWorkflow,
} from "@medusajs/medusa/core-flows"

const MEDUSA_DEFAULT_STORE_NAME = "Medusa Store"
const SALES_CHANNEL_NAME = "Default Sales Channel"
const STOCK_LOCATION_NAME = "Main warehouse"
const FULFILLMENT_SET_NAME = "Main warehouse shipping"
const SERVICE_ZONE_NAME = "Shipping zone"
const SHIPPING_OPTION_NAME = "Standard shipping"
const SHIPPING_PROFILE_NAME = "Default shipping profile"
const MANUAL_FULFILLMENT_PROVIDER = "manual_manual"
const SYSTEM_PAYMENT_PROVIDER = "pp_system_default"
const SYSTEM_TAX_PROVIDER = "tp_system"
const PRODUCT_HANDLE = "sample-product"
const PUBLISHABLE_KEY_TITLE = "Storefront"
const SAMPLE_STOCK = 100

type Settings = {
  storeName: string | undefined
  currency: string
  countries: string[]
  adminEmail: string | undefined
  adminPassword: string | undefined
  output: string | undefined
}

function settingsFromEnv(env: NodeJS.ProcessEnv): Settings {
  const currency = (env.STORE_CURRENCY || "usd").trim().toLowerCase()
  if (!/^[a-z]{3}$/.test(currency)) {
    throw new Error(`STORE_CURRENCY '${env.STORE_CURRENCY}' is not a three-letter currency code`)
  }
  const countries = (env.STORE_COUNTRIES || "us")
    .split(",")
    .map((c) => c.trim().toLowerCase())
    .filter(Boolean)
  const bad = countries.find((c) => !/^[a-z]{2}$/.test(c))
  if (bad !== undefined || countries.length === 0) {
    throw new Error(`STORE_COUNTRIES '${env.STORE_COUNTRIES}' is not a list of two-letter country codes`)
  }
  const adminEmail = env.ADMIN_EMAIL?.trim() || undefined
  if (adminEmail && !env.ADMIN_PASSWORD) {
    throw new Error("ADMIN_EMAIL is set but ADMIN_PASSWORD is not")
  }
  return {
    storeName: env.STORE_NAME?.trim() || undefined,
    currency,
    countries,
    adminEmail,
    adminPassword: env.ADMIN_PASSWORD,
    output: env.STORE_BOOTSTRAP_OUTPUT || undefined,
  }
}

/** What a run did: each entry names one thing it created or linked. */
class Changes {
  readonly made: string[] = []
  constructor(private readonly log: (message: string) => void) {}

  created(what: string): void {
    this.made.push(what)
    this.log(`bootstrap: created ${what}`)
  }

  exists(what: string): void {
    this.log(`bootstrap: ${what} exists`)
  }

  note(message: string): void {
    this.log(`bootstrap: ${message}`)
  }
}

type Context = {
  container: MedusaContainer
  query: any
  link: any
  changes: Changes
  settings: Settings
}

async function graph(ctx: Context, entity: string, fields: string[], filters: Record<string, unknown>,
  order?: Record<string, "ASC" | "DESC">) {
  const { data } = await ctx.query.graph({ entity, fields, filters, ...(order ? { pagination: { order } } : {}) })
  return data as any[]
}

async function ensureStore(ctx: Context) {
  const [store] = await graph(ctx, "store", ["id", "name", "default_sales_channel_id", "default_region_id",
    "default_location_id", "supported_currencies.currency_code", "supported_currencies.is_default"], {})
  if (!store) {
    throw new Error("no store: run `medusa db:migrate` first (Medusa creates its store when it starts)")
  }
  const update: Record<string, unknown> = {}
  const currencies = (store.supported_currencies ?? []) as { currency_code: string; is_default: boolean }[]
  if (!currencies.some((c) => c.currency_code === ctx.settings.currency)) {
    // Ours becomes the default; the others stay, no longer default.
    update.supported_currencies = [
      { currency_code: ctx.settings.currency, is_default: true },
      ...currencies.map((c) => ({ currency_code: c.currency_code, is_default: false })),
    ]
  }
  if (ctx.settings.storeName && store.name === MEDUSA_DEFAULT_STORE_NAME) {
    update.name = ctx.settings.storeName
  }
  if (Object.keys(update).length > 0) {
    await updateStoresWorkflow(ctx.container).run({ input: { selector: { id: store.id }, update } })
    ctx.changes.created(`store settings ${Object.keys(update).sort().join(", ")}`)
  } else {
    ctx.changes.exists("store currency")
  }
  return store
}

async function setStoreDefaults(ctx: Context, store: any, defaults: Record<string, string>) {
  const missing = Object.fromEntries(Object.entries(defaults).filter(([key]) => !store[key]))
  if (Object.keys(missing).length === 0) {
    return
  }
  await updateStoresWorkflow(ctx.container).run({ input: { selector: { id: store.id }, update: missing } })
  ctx.changes.created(`store ${Object.keys(missing).sort().join(", ")}`)
}

async function ensureSalesChannel(ctx: Context, store: any): Promise<string> {
  if (store.default_sales_channel_id) {
    ctx.changes.exists("sales channel")
    return store.default_sales_channel_id
  }
  const [found] = await graph(ctx, "sales_channel", ["id"], { name: SALES_CHANNEL_NAME })
  if (found) {
    ctx.changes.exists("sales channel")
    return found.id
  }
  const { result } = await createSalesChannelsWorkflow(ctx.container).run({
    input: { salesChannelsData: [{ name: SALES_CHANNEL_NAME }] },
  })
  ctx.changes.created(`sales channel ${result[0].id}`)
  return result[0].id
}

async function ensureRegion(ctx: Context): Promise<string> {
  const { countries, currency } = ctx.settings
  // A country belongs to one region at most: the region holding our first country is ours.
  const [country] = await graph(ctx, "country", ["iso_2", "region_id"], { iso_2: countries[0] })
  if (!country) {
    throw new Error(`STORE_COUNTRIES: Medusa does not know the country '${countries[0]}'`)
  }
  if (country.region_id) {
    ctx.changes.exists("region")
    return country.region_id
  }
  const { result } = await createRegionsWorkflow(ctx.container).run({
    input: {
      regions: [{
        name: countries.map((c) => c.toUpperCase()).join(", "),
        currency_code: currency,
        countries,
        payment_providers: [SYSTEM_PAYMENT_PROVIDER],
      }],
    },
  })
  ctx.changes.created(`region ${result[0].id} (${currency}, ${countries.join(", ")})`)
  return result[0].id
}

async function ensureTaxRegions(ctx: Context) {
  const existing = await graph(ctx, "tax_region", ["country_code"], { parent_id: null })
  const have = new Set(existing.map((t) => t.country_code))
  const missing = ctx.settings.countries.filter((c) => !have.has(c))
  if (missing.length === 0) {
    ctx.changes.exists("tax regions")
    return
  }
  await createTaxRegionsWorkflow(ctx.container).run({
    input: missing.map((country_code) => ({ country_code, provider_id: SYSTEM_TAX_PROVIDER })),
  })
  ctx.changes.created(`tax regions ${missing.join(", ")}`)
}

async function ensureStockLocation(ctx: Context, salesChannelId: string): Promise<any> {
  const fields = ["id", "sales_channels.id", "fulfillment_providers.id", "fulfillment_sets.id",
    "fulfillment_sets.name", "fulfillment_sets.service_zones.id", "fulfillment_sets.service_zones.name"]
  let [location] = await graph(ctx, "stock_location", fields, { name: STOCK_LOCATION_NAME })
  if (!location) {
    const { result } = await createStockLocationsWorkflow(ctx.container).run({
      input: {
        locations: [{
          name: STOCK_LOCATION_NAME,
          address: { address_1: "", country_code: ctx.settings.countries[0] },
        }],
      },
    })
    ctx.changes.created(`stock location ${result[0].id}`)
    ;[location] = await graph(ctx, "stock_location", fields, { id: result[0].id })
  } else {
    ctx.changes.exists("stock location")
  }
  if (!(location.sales_channels ?? []).some((s: any) => s?.id === salesChannelId)) {
    await linkSalesChannelsToStockLocationWorkflow(ctx.container).run({
      input: { id: location.id, add: [salesChannelId] },
    })
    ctx.changes.created("link stock location - sales channel")
  }
  if (!(location.fulfillment_providers ?? []).some((p: any) => p?.id === MANUAL_FULFILLMENT_PROVIDER)) {
    await ctx.link.create({
      [Modules.STOCK_LOCATION]: { stock_location_id: location.id },
      [Modules.FULFILLMENT]: { fulfillment_provider_id: MANUAL_FULFILLMENT_PROVIDER },
    })
    ctx.changes.created(`link stock location - fulfillment provider ${MANUAL_FULFILLMENT_PROVIDER}`)
  }
  return location
}

async function ensureServiceZone(ctx: Context, location: any): Promise<string> {
  let set = (location.fulfillment_sets ?? []).find((s: any) => s?.name === FULFILLMENT_SET_NAME)
  if (!set) {
    await createLocationFulfillmentSetWorkflow(ctx.container).run({
      input: { location_id: location.id, fulfillment_set_data: { name: FULFILLMENT_SET_NAME, type: "shipping" } },
    })
    ;[set] = await graph(ctx, "fulfillment_set", ["id", "service_zones.id", "service_zones.name"],
      { name: FULFILLMENT_SET_NAME })
    ctx.changes.created(`fulfillment set ${set.id}`)
  }
  const zone = (set.service_zones ?? []).find((z: any) => z?.name === SERVICE_ZONE_NAME)
  if (zone) {
    ctx.changes.exists("fulfillment set and service zone")
    return zone.id
  }
  const { result } = await createServiceZonesWorkflow(ctx.container).run({
    input: {
      data: [{
        name: SERVICE_ZONE_NAME,
        fulfillment_set_id: set.id,
        geo_zones: ctx.settings.countries.map((country_code) => ({ type: "country" as const, country_code })),
      }],
    },
  })
  ctx.changes.created(`service zone ${result[0].id}`)
  return result[0].id
}

async function ensureShippingProfile(ctx: Context): Promise<string> {
  const [profile] = await graph(ctx, "shipping_profile", ["id"], { type: "default" })
  if (profile) {
    ctx.changes.exists("shipping profile")
    return profile.id
  }
  const { result } = await createShippingProfilesWorkflow(ctx.container).run({
    input: { data: [{ name: SHIPPING_PROFILE_NAME, type: "default" }] },
  })
  ctx.changes.created(`shipping profile ${result[0].id}`)
  return result[0].id
}

async function ensureShippingOption(ctx: Context, zoneId: string, profileId: string, regionId: string) {
  const [option] = await graph(ctx, "shipping_option", ["id"], { name: SHIPPING_OPTION_NAME, service_zone_id: zoneId })
  if (option) {
    ctx.changes.exists("shipping option")
    return option.id
  }
  const { result } = await createShippingOptionsWorkflow(ctx.container).run({
    input: [{
      name: SHIPPING_OPTION_NAME,
      price_type: "flat",
      provider_id: MANUAL_FULFILLMENT_PROVIDER,
      service_zone_id: zoneId,
      shipping_profile_id: profileId,
      type: { label: "Standard", description: "Delivered in 3-5 days.", code: "standard" },
      prices: [
        { currency_code: ctx.settings.currency, amount: 5 },
        { region_id: regionId, amount: 5 },
      ],
      rules: [
        { attribute: "enabled_in_store", value: "true", operator: "eq" },
        { attribute: "is_return", value: "false", operator: "eq" },
      ],
    }],
  })
  ctx.changes.created(`shipping option ${result[0].id}`)
  return result[0].id
}

async function ensureProduct(ctx: Context, salesChannelId: string, profileId: string, locationId: string) {
  const fields = ["id", "variants.id", "variants.inventory_items.inventory_item_id"]
  let [product] = await graph(ctx, "product", fields, { handle: PRODUCT_HANDLE })
  if (!product) {
    const { result } = await createProductsWorkflow(ctx.container).run({
      input: {
        products: [{
          title: "Sample product",
          handle: PRODUCT_HANDLE,
          description: "A product to try the store with: edit or delete it in the admin.",
          status: ProductStatus.PUBLISHED,
          shipping_profile_id: profileId,
          options: [{ title: "Size", values: ["One size"] }],
          variants: [{
            title: "One size",
            sku: "SAMPLE-ONE-SIZE",
            options: { Size: "One size" },
            manage_inventory: true,
            prices: [{ currency_code: ctx.settings.currency, amount: 20 }],
          }],
          sales_channels: [{ id: salesChannelId }],
        }],
      },
    })
    ctx.changes.created(`product ${result[0].id} (${PRODUCT_HANDLE})`)
    ;[product] = await graph(ctx, "product", fields, { id: result[0].id })
  } else {
    ctx.changes.exists("product")
  }
  const itemIds: string[] = (product.variants ?? []).flatMap((v: any) =>
    (v?.inventory_items ?? []).map((i: any) => i?.inventory_item_id).filter(Boolean))
  if (itemIds.length === 0) {
    return product.id
  }
  const levels = await graph(ctx, "inventory_level", ["inventory_item_id"],
    { inventory_item_id: itemIds, location_id: locationId })
  const stocked = new Set(levels.map((l) => l.inventory_item_id))
  const missing = itemIds.filter((id) => !stocked.has(id))
  if (missing.length > 0) {
    await createInventoryLevelsWorkflow(ctx.container).run({
      input: {
        inventory_levels: missing.map((inventory_item_id) => ({
          inventory_item_id, location_id: locationId, stocked_quantity: SAMPLE_STOCK,
        })),
      },
    })
    ctx.changes.created(`inventory levels for ${missing.length} item(s)`)
  }
  return product.id
}

async function ensurePublishableKey(ctx: Context, salesChannelId: string): Promise<string> {
  const fields = ["id", "token", "sales_channels.id"]
  // Medusa makes a "Default Publishable API Key" when it first starts: the oldest key that is not
  // revoked is the storefront's; one is created only when there is none.
  let [key] = await graph(ctx, "api_key", fields, { type: "publishable", revoked_at: null }, { created_at: "ASC" })
  if (!key) {
    const { result } = await createApiKeysWorkflow(ctx.container).run({
      input: { api_keys: [{ title: PUBLISHABLE_KEY_TITLE, type: "publishable", created_by: "" }] },
    })
    ctx.changes.created(`publishable key ${result[0].id}`)
    ;[key] = await graph(ctx, "api_key", fields, { id: result[0].id })
  } else {
    ctx.changes.exists("publishable key")
  }
  if (!(key.sales_channels ?? []).some((s: any) => s?.id === salesChannelId)) {
    await linkSalesChannelsToApiKeyWorkflow(ctx.container).run({ input: { id: key.id, add: [salesChannelId] } })
    ctx.changes.created("link publishable key - sales channel")
  }
  return key.token
}

async function ensureAdmin(ctx: Context) {
  const { adminEmail: email, adminPassword: password } = ctx.settings
  if (!email || !password) {
    ctx.changes.note("ADMIN_EMAIL is not set: no admin user")
    return
  }
  const auth: any = ctx.container.resolve(Modules.AUTH)
  const [user] = await graph(ctx, "user", ["id"], { email })
  const [identity] = await auth.listAuthIdentities({ provider_identities: { entity_id: email, provider: "emailpass" } })
  let identityId: string | undefined = identity?.id
  if (!identityId) {
    const { success, authIdentity, error } = await auth.register("emailpass", { body: { email, password } })
    if (!success || !authIdentity) {
      throw new Error(`registering the admin's e-mail/password identity failed: ${error}`)
    }
    identityId = authIdentity.id
    ctx.changes.created("admin login identity")
  }
  if (!user) {
    await createUserAccountWorkflow(ctx.container).run({
      input: { authIdentityId: identityId as string, userData: { email } },
    })
    ctx.changes.created("admin user")
    return
  }
  if (identity?.app_metadata?.user_id === user.id) {
    ctx.changes.exists("admin user")
    return
  }
  await setAuthAppMetadataWorkflow(ctx.container).run({
    input: { authIdentityId: identityId as string, actorType: "user", value: user.id },
  })
  ctx.changes.created("link admin login identity - user")
}

export default async function bootstrap({ container }: ExecArgs) {
  const logger = container.resolve(ContainerRegistrationKeys.LOGGER)
  const ctx: Context = {
    container,
    query: container.resolve(ContainerRegistrationKeys.QUERY),
    link: container.resolve(ContainerRegistrationKeys.LINK),
    changes: new Changes((message) => logger.info(message)),
    settings: settingsFromEnv(process.env),
  }

  const store = await ensureStore(ctx)
  const salesChannelId = await ensureSalesChannel(ctx, store)
  const regionId = await ensureRegion(ctx)
  await ensureTaxRegions(ctx)
  const location = await ensureStockLocation(ctx, salesChannelId)
  await setStoreDefaults(ctx, store, {
    default_sales_channel_id: salesChannelId,
    default_region_id: regionId,
    default_location_id: location.id,
  })
  const zoneId = await ensureServiceZone(ctx, location)
  const profileId = await ensureShippingProfile(ctx)
  const shippingOptionId = await ensureShippingOption(ctx, zoneId, profileId, regionId)
  const productId = await ensureProduct(ctx, salesChannelId, profileId, location.id)
  const publishableKey = await ensurePublishableKey(ctx, salesChannelId)
  await ensureAdmin(ctx)

  const result = {
    publishable_key: publishableKey,
    sales_channel_id: salesChannelId,
    region_id: regionId,
    stock_location_id: location.id,
    shipping_option_id: shippingOptionId,
    product_id: productId,
    admin_email: ctx.settings.adminEmail ?? null,
    changes: ctx.changes.made,
  }
  if (ctx.settings.output) {
    writeFileSync(ctx.settings.output, JSON.stringify(result, null, 2) + "\n", { mode: 0o600 })
  }
  logger.info(`bootstrap: publishable key ${publishableKey}`)
  logger.info(ctx.changes.made.length === 0
    ? "bootstrap: nothing to do, everything exists"
    : `bootstrap: ${ctx.changes.made.length} change(s)`)
}
