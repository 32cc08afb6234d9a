<?php
/**
 * wp-config.php of storeops.local/wordpress. Every setting is read from the environment at each
 * request: WORDPRESS_DB_HOST, _DB_USER, _DB_PASSWORD, _DB_NAME, _DB_CHARSET, _DB_COLLATE,
 * _AUTH_KEY ... _NONCE_SALT, _TABLE_PREFIX, _DEBUG, and WORDPRESS_CONFIG_EXTRA (PHP run here).
 * NAME_FILE names a file holding the value instead. The entrypoint replaced each key's placeholder
 * with a random default when it wrote this file.
 */

if (!function_exists('storeops_setting')) {
	function storeops_setting(string $name, string $default): string
	{
		$file = getenv($name . '_FILE');
		if ($file !== false && $file !== '') {
			return rtrim((string) file_get_contents($file), "\r\n");
		}
		$value = getenv($name);
		return $value === false ? $default : $value;
	}
}

define('DB_NAME', storeops_setting('WORDPRESS_DB_NAME', 'wordpress'));
define('DB_USER', storeops_setting('WORDPRESS_DB_USER', 'wordpress'));
define('DB_PASSWORD', storeops_setting('WORDPRESS_DB_PASSWORD', ''));
define('DB_HOST', storeops_setting('WORDPRESS_DB_HOST', 'mysql'));
define('DB_CHARSET', storeops_setting('WORDPRESS_DB_CHARSET', 'utf8mb4'));
define('DB_COLLATE', storeops_setting('WORDPRESS_DB_COLLATE', ''));

define('AUTH_KEY', storeops_setting('WORDPRESS_AUTH_KEY', 'put your unique phrase here'));
define('SECURE_AUTH_KEY', storeops_setting('WORDPRESS_SECURE_AUTH_KEY', 'put your unique phrase here'));
define('LOGGED_IN_KEY', storeops_setting('WORDPRESS_LOGGED_IN_KEY', 'put your unique phrase here'));
define('NONCE_KEY', storeops_setting('WORDPRESS_NONCE_KEY', 'put your unique phrase here'));
define('AUTH_SALT', storeops_setting('WORDPRESS_AUTH_SALT', 'put your unique phrase here'));
define('SECURE_AUTH_SALT', storeops_setting('WORDPRESS_SECURE_AUTH_SALT', 'put your unique phrase here'));
define('LOGGED_IN_SALT', storeops_setting('WORDPRESS_LOGGED_IN_SALT', 'put your unique phrase here'));
define('NONCE_SALT', storeops_setting('WORDPRESS_NONCE_SALT', 'put your unique phrase here'));

$table_prefix = storeops_setting('WORDPRESS_TABLE_PREFIX', 'wp_');

define('WP_DEBUG', (bool) storeops_setting('WORDPRESS_DEBUG', ''));

// Behind a TLS-terminating proxy (the ingress controller), https is what the client used.
if (isset($_SERVER['HTTP_X_FORWARDED_PROTO']) && strpos($_SERVER['HTTP_X_FORWARDED_PROTO'], 'https') !== false) {
	$_SERVER['HTTPS'] = 'on';
}

$storeops_extra = storeops_setting('WORDPRESS_CONFIG_EXTRA', '');
if ($storeops_extra !== '') {
	eval($storeops_extra);
}
unset($storeops_extra);

if (!defined('ABSPATH')) {
	define('ABSPATH', __DIR__ . '/');
}

require_once ABSPATH . 'wp-settings.php';
