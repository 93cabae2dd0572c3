// Renders Foxglove Studio's App (studio-base 1.48.0) with in-memory settings and layouts, as the
// studio repository's web/src/Root.tsx does with its browser storage. URL parameters: the
// studio's own (ds, ds.url, layoutId, time) plus layoutUrl, a layout JSON (the file Foxglove's
// "Import layout" reads) stored under the id given by layoutId before the app starts.
/* global App, React, ReactDOM, RemoteDataSourceFactory, McapLocalDataSourceFactory,
   Ros2LocalBagDataSourceFactory, FoxgloveWebSocketDataSourceFactory, initI18n, waitForFonts */
'use strict';

// Settings a browser user would otherwise set by hand: no network, UTC times, no dialogs.
const SETTINGS = {
  'colorScheme': 'dark',
  'timezone': 'UTC',
  'telemetry.telemetryEnabled': false,
  'telemetry.crashReportingEnabled': false,
  'updates.enabled': false,
  'hideSignInPrompt': true,
  'launchPreference': 'web',
  'ui.open-dialog-startup': false,
};

function memoryConfiguration(initial) {
  const values = new Map(Object.entries(initial));
  const listeners = new Map();
  return {
    get: (key) => values.get(key),
    set: async (key, value) => {
      values.set(key, value);
      for (const cb of listeners.get(key) || []) {
        cb(value);
      }
    },
    addChangeListener: (key, cb) => {
      listeners.set(key, (listeners.get(key) || new Set()).add(cb));
    },
    removeChangeListener: (key, cb) => {
      (listeners.get(key) || new Set()).delete(cb);
    },
  };
}

function memoryLayoutStorage() {
  const spaces = new Map();
  const space = (ns) => {
    if (!spaces.has(ns)) {
      spaces.set(ns, new Map());
    }
    return spaces.get(ns);
  };
  return {
    list: async (ns) => Array.from(space(ns).values()),
    get: async (ns, id) => space(ns).get(id),
    put: async (ns, layout) => {
      space(ns).set(layout.id, layout);
      return layout;
    },
    delete: async (ns, id) => {
      space(ns).delete(id);
    },
    importLayouts: async ({ fromNamespace, toNamespace }) => {
      for (const layout of space(fromNamespace).values()) {
        space(toNamespace).set(layout.id, layout);
      }
    },
    migrateUnnamespacedLayouts: async () => {},
  };
}

// studio-base keeps the user profile in localStorage: mark the panels' settings tooltips as
// shown, as after a user dismissed them, so that none covers a panel.
const PROFILE = {
  onboarding: { settingsTooltipShownForPanelTypes: ['3D', 'ImageViewPanel', 'Image',
    'DiagnosticStatusPanel', 'DiagnosticSummary', 'RawMessages', 'SourceInfo'] },
};

async function main() {
  localStorage.setItem('studio.profile-data', JSON.stringify(PROFILE));
  const params = new URLSearchParams(location.search);
  const layouts = memoryLayoutStorage();
  const layoutUrl = params.get('layoutUrl');
  const layoutId = params.get('layoutId');
  if (layoutUrl && layoutId) {
    const response = await fetch(layoutUrl);
    if (!response.ok) {
      throw new Error(`layout ${layoutUrl}: HTTP ${response.status}`);
    }
    const data = await response.json();
    const now = new Date().toISOString();
    // The local namespace of studio-base's LayoutManager (LOCAL_STORAGE_NAMESPACE).
    await layouts.put('local', {
      id: layoutId, name: layoutUrl.split('/').pop(), permission: 'CREATOR_WRITE',
      baseline: { data, savedAt: now }, working: undefined, syncInfo: undefined,
    });
  }
  await initI18n();
  await waitForFonts();
  const app = React.createElement(App, {
    deepLinks: [location.href],
    appConfiguration: memoryConfiguration(SETTINGS),
    layoutStorage: layouts,
    dataSources: [new RemoteDataSourceFactory(), new McapLocalDataSourceFactory(),
      new Ros2LocalBagDataSourceFactory(), new FoxgloveWebSocketDataSourceFactory()],
    extensionLoaders: [],
    enableLaunchPreferenceScreen: false,
    enableGlobalCss: true,
  });
  ReactDOM.render(app, document.getElementById('root'));
}

main().catch((error) => {
  document.body.setAttribute('data-host-error', String(error));
  console.error(error);
});
