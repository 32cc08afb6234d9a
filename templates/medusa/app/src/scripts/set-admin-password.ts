/**
 * Give the store's admin a new password, run with `medusa exec ./src/scripts/set-admin-password.js`
 * by the chart's credentials-rotation Job, between its steps that keep the password in the store's
 * credentials Secret.
 *
 * Environment:
 *   ADMIN_EMAIL               the admin's e-mail (the e-mail/password login the bootstrap made)
 *   NEW_ADMIN_PASSWORD_FILE   a file holding the new password (never an argument or a variable)
 *
 * Sets it through the auth module's e-mail/password provider (the same hashing as a sign-up), then
 * signs in with it to check. Running it again with the same password changes nothing; before the
 * bootstrap made the admin there is nothing to change.
 */
import { readFileSync } from "node:fs"

import type { ExecArgs } from "@medusajs/framework/types"
import { ContainerRegistrationKeys, Modules } from "@medusajs/framework/utils"

const PROVIDER = "emailpass"

export default async function setAdminPassword({ container }: ExecArgs) {
  const logger = container.resolve(ContainerRegistrationKeys.LOGGER)
  const email = process.env.ADMIN_EMAIL?.trim()
  const file = process.env.NEW_ADMIN_PASSWORD_FILE
  if (!email || !file) {
    throw new Error("ADMIN_EMAIL and NEW_ADMIN_PASSWORD_FILE must both be set")
  }
  const password = readFileSync(file, "utf8")
  if (!password) {
    throw new Error(`no new password in ${file}`)
  }
  const auth: any = container.resolve(Modules.AUTH)
  const signIn = () => auth.authenticate(PROVIDER, { body: { email, password } })

  if ((await signIn()).success) {
    logger.info(`set-admin-password: ${email} has the new password already`)
    return
  }
  const [identity] = await auth.listAuthIdentities({ provider_identities: { entity_id: email, provider: PROVIDER } })
  if (!identity) {
    // The bootstrap has not run yet: it creates the admin with the Secret's (new) password.
    logger.info(`set-admin-password: no ${PROVIDER} login for ${email} yet; the bootstrap makes it`)
    return
  }
  const { success, error } = await auth.updateProvider(PROVIDER, { entity_id: email, password })
  if (!success) {
    throw new Error(`changing the password of ${email} failed: ${error}`)
  }
  const check = await signIn()
  if (!check.success) {
    throw new Error(`${email} cannot sign in with the new password: ${check.error}`)
  }
  logger.info(`set-admin-password: the password of ${email} was changed`)
}
