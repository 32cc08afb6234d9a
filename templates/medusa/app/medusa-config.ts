import { defineConfig, loadEnv } from "@medusajs/framework/utils"

// The storeops Medusa chart (templates/medusa) sets every value below in the Pod's environment;
// a local .env file is read only when present (development).
loadEnv(process.env.NODE_ENV || "development", process.cwd())

const redisUrl = process.env.REDIS_URL
// The admin dashboard is built and served unless MEDUSA_ADMIN_DISABLED=true; the value must be the
// same for `medusa build` and `medusa start` (the server looks for the built dashboard).
const adminDisabled = process.env.MEDUSA_ADMIN_DISABLED === "true"

// Redis, when given, carries the event bus, the workflow engine's state, the cache and the locks,
// so several server processes share them; without it Medusa keeps them in memory (one process).
const redisModules = redisUrl
  ? [
      {
        resolve: "@medusajs/medusa/event-bus-redis",
        options: { redisUrl },
      },
      {
        resolve: "@medusajs/medusa/workflow-engine-redis",
        options: { redis: { redisUrl } },
      },
      {
        resolve: "@medusajs/medusa/cache-redis",
        options: { redisUrl },
      },
      {
        resolve: "@medusajs/medusa/locking",
        options: {
          providers: [
            {
              resolve: "@medusajs/medusa/locking-redis",
              id: "locking-redis",
              is_default: true,
              options: { redisUrl },
            },
          ],
        },
      },
    ]
  : []

// The store's public URL (the chart's `url`), for links to uploaded files and the CORS defaults.
const backendUrl = process.env.MEDUSA_BACKEND_URL || `http://localhost:${process.env.PORT || "9000"}`

export default defineConfig({
  projectConfig: {
    // Read when the server, a migration or a script runs; `medusa build` (in an image build) has none
    // of them. In production Medusa refuses to start without JWT_SECRET and COOKIE_SECRET.
    databaseUrl: process.env.DATABASE_URL,
    redisUrl,
    http: {
      storeCors: process.env.STORE_CORS || backendUrl,
      adminCors: process.env.ADMIN_CORS || backendUrl,
      authCors: process.env.AUTH_CORS || backendUrl,
      jwtSecret: process.env.JWT_SECRET,
      cookieSecret: process.env.COOKIE_SECRET,
    },
  },
  admin: {
    disable: adminDisabled,
    // Built into the dashboard at image build time: "/" (same origin) serves every store's host.
    backendUrl: process.env.MEDUSA_ADMIN_BACKEND_URL || "/",
  },
  modules: [
    ...redisModules,
    {
      resolve: "@medusajs/medusa/file",
      options: {
        providers: [
          {
            resolve: "@medusajs/medusa/file-local",
            id: "local",
            options: {
              // The chart mounts the uploads volume here (medusa.uploadsPath).
              upload_dir: process.env.MEDUSA_UPLOADS_DIR || "static",
              backend_url: `${backendUrl}/static`,
            },
          },
        ],
      },
    },
  ],
})
