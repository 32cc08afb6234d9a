<?php
/**
 * storeops WooCommerce setup, run by the WordPress image's own PHP: `php /scripts/setup.php`.
 *
 * Installs WordPress (first run) or upgrades its database to the core's (after an engine upgrade
 * replaced the core files), keeps the site title equal to the store's name, installs the pinned
 * WooCommerce from the cluster profile's plugin source when the installed one differs, activates it
 * and applies the shop defaults once. Every step looks before it changes anything, so a second run
 * changes nothing. On failure it prints one line, `setup failed: <reason>`, writes the same reason to
 * the container's termination message and exits non-zero:
 *
 *   1  something that may pass on a retry (database not up yet, WordPress stopped)
 *   2  the Job's settings are wrong (a variable is missing)
 *   3  the plugin source gave no WooCommerce of the pinned version (unreachable, HTTP error, bad archive)
 *
 * Every input comes from the environment and is used as data only: no shell, no command line, no
 * option built from a request's value.
 *
 * The steps run as separate PHP processes (this file with the step's name as its argument), because
 * WordPress loads its plugins once per process: the site is installed, and the plugin files replaced,
 * with plugins off (WP_INSTALLING); WooCommerce is activated in a process of its own; the shop is
 * configured in one where WooCommerce loaded like on any request.
 */

declare(strict_types=1);

const STOREOPS_DOCROOT = '/var/www/html';
const STOREOPS_PLUGIN = 'woocommerce/woocommerce.php';
const STOREOPS_STEPS = ['site', 'plugin', 'activate', 'shop'];
/** Steps the setup does not run itself: `admin-password` is the password rotation Job's. */
const STOREOPS_OTHER_STEPS = ['admin-password'];
const STOREOPS_EXIT_RETRY = 1;
const STOREOPS_EXIT_CONFIG = 2;
const STOREOPS_EXIT_PLUGIN = 3;
/** How long to wait for the WordPress container's wp-config.php and for the database. */
const STOREOPS_WAIT_SECONDS = 300;
const STOREOPS_TERMINATION_LOG = '/dev/termination-log';

final class StoreopsSetupFailed extends RuntimeException
{
}

/** Set when the step ran to its end; a step that stops otherwise (wp_die, exit) is a failure. */
$GLOBALS['storeops_finished'] = false;

function storeops_say(string $line): void
{
    fwrite(STDOUT, 'setup: ' . $line . "\n");
}

function storeops_fail(string $reason, int $code = STOREOPS_EXIT_RETRY): never
{
    throw new StoreopsSetupFailed($reason, $code);
}

/** Print the reason on one line, leave it as the container's termination message, exit with $code. */
function storeops_report(string $reason, int $code): never
{
    $line = 'setup failed: ' . trim((string) preg_replace('/\s+/', ' ', $reason));
    fwrite(STDERR, $line . "\n");
    if (is_writable(STOREOPS_TERMINATION_LOG)) {
        @file_put_contents(STOREOPS_TERMINATION_LOG, $line);
    }
    $GLOBALS['storeops_finished'] = true;
    exit($code);
}

function storeops_env(string $name, bool $required = true): string
{
    $value = getenv($name);
    if ($value === false || ($required && $value === '')) {
        storeops_fail("the environment variable $name is not set", STOREOPS_EXIT_CONFIG);
    }
    return (string) $value;
}

/** The plugin source with the version put in: `{version}` in the profile's URL. */
function storeops_plugin_url(): string
{
    return str_replace('{version}', rawurlencode(storeops_env('WOOCOMMERCE_VERSION')), storeops_env('WOOCOMMERCE_SOURCE'));
}

// --- the parent: wait for WordPress's files and database, then run each step in its own process ----

function storeops_main(): int
{
    $url = storeops_env('STORE_URL');
    foreach (['STORE_NAME', 'ADMIN_USER', 'ADMIN_EMAIL', 'ADMIN_PASSWORD', 'WOOCOMMERCE_VERSION',
              'WOOCOMMERCE_SOURCE', 'CURRENCY', 'COUNTRY', 'PRODUCT_NAME', 'PRODUCT_SLUG', 'PRODUCT_PRICE'] as $name) {
        storeops_env($name);
    }
    storeops_wait_for_wordpress();
    foreach (STOREOPS_STEPS as $step) {
        $process = proc_open([PHP_BINARY, __FILE__, $step], [0 => ['file', '/dev/null', 'r']], $pipes);
        if (!is_resource($process)) {
            storeops_fail("could not start PHP for the $step step");
        }
        $status = proc_close($process);
        if ($status !== 0) {
            // The step reported its reason itself; a PHP crash did not.
            if (!in_array($status, [STOREOPS_EXIT_RETRY, STOREOPS_EXIT_CONFIG, STOREOPS_EXIT_PLUGIN], true)) {
                storeops_fail("the $step step ended with status $status (PHP error: see the Job's log)");
            }
            $GLOBALS['storeops_finished'] = true;
            return $status;
        }
    }
    storeops_say("done: $url");
    return 0;
}

function storeops_wait_for_wordpress(): void
{
    $deadline = time() + STOREOPS_WAIT_SECONDS;
    // The WordPress container copies WordPress and writes wp-config.php on its first start.
    while (!is_file(STOREOPS_DOCROOT . '/wp-config.php') || !is_file(STOREOPS_DOCROOT . '/wp-load.php')) {
        if (time() > $deadline) {
            storeops_fail('WordPress is not in ' . STOREOPS_DOCROOT . ' (no wp-config.php) after ' . STOREOPS_WAIT_SECONDS . 's');
        }
        sleep(5);
    }
    [$host, $port] = array_pad(explode(':', storeops_env('WORDPRESS_DB_HOST'), 2), 2, '3306');
    mysqli_report(MYSQLI_REPORT_OFF);
    while (true) {
        $db = @mysqli_connect($host, storeops_env('WORDPRESS_DB_USER'), storeops_env('WORDPRESS_DB_PASSWORD'),
            storeops_env('WORDPRESS_DB_NAME'), (int) $port);
        if ($db !== false) {
            mysqli_close($db);
            return;
        }
        if (time() > $deadline) {
            storeops_fail("the database at $host:$port does not answer after " . STOREOPS_WAIT_SECONDS . 's: '
                . mysqli_connect_error());
        }
        sleep(5);
    }
}

// --- loading WordPress in a step --------------------------------------------------------------------

/**
 * Load WordPress for a step. Hooks are put in place before it loads (WordPress takes a pre-filled
 * $wp_filter): wp_die ends the step as a failure with WordPress's message, and no HTTP request
 * leaves the process except to the plugin source (no loopback, update or telemetry calls).
 */
function storeops_load_wordpress(bool $installing): void
{
    global $wp_filter;
    if ($installing) {
        define('WP_INSTALLING', true);
    }
    if (!defined('DISABLE_WP_CRON')) {
        define('DISABLE_WP_CRON', true);
    }
    $parts = parse_url(storeops_env('STORE_URL'));
    $_SERVER['HTTP_HOST'] = $_SERVER['SERVER_NAME'] = (string) ($parts['host'] ?? 'localhost');
    $_SERVER['REQUEST_URI'] = '/';
    $_SERVER['REQUEST_METHOD'] = 'GET';
    $_SERVER['SERVER_PROTOCOL'] = 'HTTP/1.1';
    if (($parts['scheme'] ?? '') === 'https') {
        $_SERVER['HTTPS'] = 'on';
    }
    $wp_filter = [
        'wp_die_handler' => [10 => [['function' => static fn() => 'storeops_wp_die', 'accepted_args' => 1]]],
        'pre_http_request' => [10 => [['function' => 'storeops_only_the_plugin_source', 'accepted_args' => 3]]],
    ];
    require_once STOREOPS_DOCROOT . '/wp-load.php';
}

/** @param mixed $message */
function storeops_wp_die($message, string $title = '', $args = []): void
{
    if ($message instanceof WP_Error) {
        $message = $message->get_error_message();
    }
    $text = html_entity_decode(wp_strip_all_tags(is_scalar($message) ? (string) $message : $title), ENT_QUOTES, 'UTF-8');
    storeops_report('WordPress stopped: ' . ($text !== '' ? $text : 'no message'), STOREOPS_EXIT_RETRY);
}

/**
 * @param false|array<string, mixed>|WP_Error $pre
 * @param array<string, mixed> $args
 * @return false|WP_Error
 */
function storeops_only_the_plugin_source($pre, array $args, string $url)
{
    if ($url === storeops_plugin_url()) {
        return $pre;
    }
    return new WP_Error('storeops_blocked', 'storeops setup makes no HTTP request but to the plugin source');
}

// --- the steps -------------------------------------------------------------------------------------

/** Install WordPress on the first run; keep the site title equal to the store's name. */
function storeops_step_site(): void
{
    storeops_load_wordpress(true);
    // The install's e-mail to the admin: the owner gets the credentials from storeops, not by mail.
    if (!function_exists('wp_new_blog_notification')) {
        function wp_new_blog_notification($blog_title, $blog_url, $user_id, $password): void
        {
        }
    }
    require_once ABSPATH . 'wp-admin/includes/upgrade.php';
    $name = storeops_env('STORE_NAME');
    if (is_blog_installed()) {
        storeops_say('WordPress already installed');
        storeops_upgrade_database();
    } else {
        storeops_say('installing WordPress for ' . storeops_env('STORE_URL'));
        $installed = wp_install($name, storeops_env('ADMIN_USER'), storeops_env('ADMIN_EMAIL'), true, '',
            storeops_env('ADMIN_PASSWORD'));
        if (!is_array($installed) || empty($installed['user_id']) || $installed['user_id'] instanceof WP_Error) {
            storeops_fail('wp_install did not create the admin user');
        }
        wp_cache_flush();
        if (!is_blog_installed()) {
            storeops_fail('WordPress does not count as installed after wp_install');
        }
    }
    // update_option compares with the stored value and writes only a change.
    if (update_option('blogname', $name)) {
        storeops_say('site title set to the store name');
    }
}

/**
 * After an engine upgrade (the wordpress Deployment's init container replaced the core files), bring
 * the database to the core's schema with WordPress's own wp_upgrade(), as wp-admin/upgrade.php would:
 * the stored db_version below the core's $wp_db_version means the core is newer than the database.
 */
function storeops_upgrade_database(): void
{
    global $wp_db_version, $wp_version;
    $want = (int) $wp_db_version;
    $have = (int) get_option('db_version');
    if ($have >= $want) {
        return;
    }
    storeops_say("upgrading the WordPress database from db_version $have to $want (WordPress $wp_version)");
    wp_upgrade();
    wp_cache_flush();
    $now = (int) get_option('db_version');
    if ($now !== $want) {
        storeops_fail("the WordPress database is at db_version $now after wp_upgrade, not $want");
    }
    storeops_say("WordPress database upgraded to db_version $want");
}

function storeops_installed_version(string $file): ?string
{
    if (!is_file($file)) {
        return null;
    }
    $data = get_plugin_data($file, false, false);
    return $data['Version'] !== '' ? (string) $data['Version'] : null;
}

/** Install the pinned WooCommerce when the installed one differs (or none is there). */
function storeops_step_plugin(): void
{
    storeops_load_wordpress(true);
    require_once ABSPATH . 'wp-admin/includes/plugin.php';
    $want = storeops_env('WOOCOMMERCE_VERSION');
    $target = WP_PLUGIN_DIR . '/woocommerce';
    $have = storeops_installed_version($target . '/woocommerce.php');
    if ($have === $want) {
        storeops_say("WooCommerce $want already installed");
        return;
    }
    $url = storeops_plugin_url();
    storeops_say(($have === null ? 'installing' : "replacing WooCommerce $have with") . " WooCommerce $want from $url");

    $work = WP_CONTENT_DIR . '/upgrade/storeops-' . getmypid();
    storeops_remove($work);
    if (!wp_mkdir_p($work)) {
        storeops_fail("cannot create $work (is the content volume writable?)");
    }
    try {
        $archive = $work . '/woocommerce.zip';
        // wp_remote_get, not wp_safe_remote_get: the source is the platform's (a mirror may be on a
        // private address), never a request's.
        $response = wp_remote_get($url, ['timeout' => 300, 'stream' => true, 'filename' => $archive]);
        if (is_wp_error($response)) {
            storeops_fail("WooCommerce $want could not be downloaded from $url: " . $response->get_error_message(),
                STOREOPS_EXIT_PLUGIN);
        }
        $status = (int) wp_remote_retrieve_response_code($response);
        if ($status !== 200) {
            storeops_fail("WooCommerce $want could not be downloaded from $url: HTTP $status", STOREOPS_EXIT_PLUGIN);
        }
        storeops_unpack($archive, $work . '/unpacked', $url);
        $got = storeops_installed_version($work . '/unpacked/woocommerce/woocommerce.php');
        if ($got !== $want) {
            storeops_fail("the archive from $url holds WooCommerce " . ($got ?? '(no version)') . ", not $want",
                STOREOPS_EXIT_PLUGIN);
        }
        // Swap the folder in place: a failure above leaves the installed plugin as it was.
        if (is_dir($target) && !rename($target, $work . '/previous')) {
            storeops_fail("cannot move the installed WooCommerce out of $target");
        }
        if (!rename($work . '/unpacked/woocommerce', $target)) {
            storeops_fail("cannot move WooCommerce $want into $target");
        }
    } finally {
        storeops_remove($work);
    }
    if (storeops_installed_version($target . '/woocommerce.php') !== $want) {
        storeops_fail("WooCommerce $want is not in $target after unpacking");
    }
    storeops_say("WooCommerce $want installed in $target");
}

/** Unpack a plugin archive that must hold the woocommerce/ folder and nothing else. */
function storeops_unpack(string $archive, string $into, string $url): void
{
    $zip = new ZipArchive();
    if ($zip->open($archive, ZipArchive::RDONLY) !== true) {
        storeops_fail("the file from $url is not a zip archive", STOREOPS_EXIT_PLUGIN);
    }
    $hasMain = false;
    for ($i = 0; $i < $zip->numFiles; $i++) {
        $entry = (string) $zip->getNameIndex($i);
        $parts = explode('/', $entry);
        if ($parts[0] !== 'woocommerce' || in_array('..', $parts, true) || str_contains($entry, '\\')) {
            $zip->close();
            storeops_fail("the archive from $url has $entry outside a woocommerce/ folder", STOREOPS_EXIT_PLUGIN);
        }
        $hasMain = $hasMain || $entry === STOREOPS_PLUGIN;
    }
    if (!$hasMain) {
        $zip->close();
        storeops_fail("the archive from $url has no " . STOREOPS_PLUGIN, STOREOPS_EXIT_PLUGIN);
    }
    if (!wp_mkdir_p($into) || !$zip->extractTo($into)) {
        $zip->close();
        storeops_fail("the archive from $url could not be unpacked into $into");
    }
    $zip->close();
}

function storeops_remove(string $path): void
{
    if (is_link($path) || is_file($path)) {
        unlink($path);
        return;
    }
    if (!is_dir($path)) {
        return;
    }
    $items = new RecursiveIteratorIterator(new RecursiveDirectoryIterator($path, FilesystemIterator::SKIP_DOTS),
        RecursiveIteratorIterator::CHILD_FIRST);
    foreach ($items as $item) {
        $item->isDir() && !$item->isLink() ? rmdir($item->getPathname()) : unlink($item->getPathname());
    }
    rmdir($path);
}

function storeops_step_activate(): void
{
    storeops_load_wordpress(false);
    require_once ABSPATH . 'wp-admin/includes/plugin.php';
    if (is_plugin_active(STOREOPS_PLUGIN)) {
        storeops_say('WooCommerce already active');
        return;
    }
    storeops_as_admin();
    $result = activate_plugin(STOREOPS_PLUGIN);
    if (is_wp_error($result)) {
        storeops_fail('WooCommerce could not be activated: ' . $result->get_error_message());
    }
    storeops_say('WooCommerce activated');
}

function storeops_as_admin(): void
{
    $admin = get_user_by('login', storeops_env('ADMIN_USER'));
    if ($admin === false) {
        storeops_fail('the admin user ' . storeops_env('ADMIN_USER') . ' does not exist');
    }
    wp_set_current_user($admin->ID);
}

/** The shop defaults, once: recorded by the storeops_setup option, then they are the owner's. */
function storeops_step_shop(): void
{
    storeops_load_wordpress(false);
    if (!function_exists('WC') || !class_exists('WC_Product_Simple')) {
        storeops_fail('WooCommerce is active but did not load');
    }
    if (get_option('storeops_setup') === '1') {
        storeops_say('shop already set up; nothing else to do');
        return;
    }
    storeops_as_admin();
    storeops_say('first-run shop defaults');
    global $wp_rewrite;
    if (get_option('permalink_structure') !== '/%postname%/') {
        $wp_rewrite->set_permalink_structure('/%postname%/');
        flush_rewrite_rules(false);
    }
    update_option('woocommerce_currency', storeops_env('CURRENCY'));
    update_option('woocommerce_default_country', storeops_env('COUNTRY'));
    // New WooCommerce shops start in "coming soon" mode, which hides the shop from customers.
    update_option('woocommerce_coming_soon', 'no');
    update_option('woocommerce_enable_guest_checkout', 'yes');
    update_option('woocommerce_cod_settings', [
        'enabled' => 'yes',
        'title' => 'Cash on delivery',
        'description' => 'Pay with cash upon delivery.',
        'instructions' => 'Pay with cash upon delivery.',
        'enable_for_methods' => [],
        'enable_for_virtual' => 'yes',
    ]);
    // Shop, cart, checkout and my-account pages; WooCommerce creates only the missing ones.
    WC_Install::create_pages();

    $slug = storeops_env('PRODUCT_SLUG');
    $found = get_posts(['post_type' => 'product', 'name' => $slug, 'post_status' => 'any', 'fields' => 'ids',
        'numberposts' => 1]);
    if ($found === []) {
        // Virtual: checkout needs no shipping zone, so Cash on Delivery works right away.
        $product = new WC_Product_Simple();
        $product->set_name(storeops_env('PRODUCT_NAME'));
        $product->set_slug($slug);
        $product->set_regular_price(storeops_env('PRODUCT_PRICE'));
        $product->set_virtual(true);
        $product->set_status('publish');
        if ($product->save() <= 0) {
            storeops_fail('the sample product could not be saved');
        }
        storeops_say('sample product created');
    }
    update_option('storeops_setup', '1');
}

/**
 * The rotation Job's step: give the admin user the password in NEW_ADMIN_PASSWORD_FILE (WordPress's
 * own wp_set_password, which also ends the user's sessions). A second run with the same password
 * changes nothing; before the site is installed there is nothing to change.
 */
function storeops_step_admin_password(): void
{
    $file = storeops_env('NEW_ADMIN_PASSWORD_FILE');
    $password = is_readable($file) ? (string) file_get_contents($file) : '';
    if ($password === '') {
        storeops_fail("no new password in $file", STOREOPS_EXIT_CONFIG);
    }
    // Plugins off (WP_INSTALLING): only WordPress's own user functions are needed.
    storeops_load_wordpress(true);
    $login = storeops_env('ADMIN_USER');
    if (!is_blog_installed()) {
        storeops_say("WordPress is not installed yet: the setup creates $login with the new password");
        return;
    }
    $user = get_user_by('login', $login);
    if (!$user instanceof WP_User) {
        storeops_fail("there is no WordPress user $login to change the password of", STOREOPS_EXIT_CONFIG);
    }
    if (wp_check_password($password, $user->user_pass, $user->ID)) {
        storeops_say("the password of $login is the new one already");
        return;
    }
    wp_set_password($password, $user->ID);
    clean_user_cache($user->ID);
    $user = get_user_by('id', $user->ID);
    if (!$user instanceof WP_User || !wp_check_password($password, $user->user_pass, $user->ID)) {
        storeops_fail("WordPress did not keep the new password of $login");
    }
    storeops_say("the password of $login was changed");
}

// --- entry point -----------------------------------------------------------------------------------

register_shutdown_function(static function (): void {
    if ($GLOBALS['storeops_finished']) {
        return;
    }
    $error = error_get_last();
    storeops_report('the setup stopped early' . ($error ? ': ' . $error['message'] : ' (see the Job\'s log)'),
        STOREOPS_EXIT_RETRY);
});

try {
    $step = $argv[1] ?? '';
    if ($step === '') {
        $code = storeops_main();
        $GLOBALS['storeops_finished'] = true;
        exit($code);
    }
    if (!in_array($step, [...STOREOPS_STEPS, ...STOREOPS_OTHER_STEPS], true)) {
        storeops_fail("no step $step (steps: " . implode(', ', [...STOREOPS_STEPS, ...STOREOPS_OTHER_STEPS]) . ')',
            STOREOPS_EXIT_CONFIG);
    }
    ('storeops_step_' . str_replace('-', '_', $step))();
    $GLOBALS['storeops_finished'] = true;
    exit(0);
} catch (StoreopsSetupFailed $e) {
    storeops_report($e->getMessage(), $e->getCode());
} catch (Throwable $e) {
    storeops_report(get_class($e) . ': ' . $e->getMessage(), STOREOPS_EXIT_RETRY);
}
