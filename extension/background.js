// Clicking the toolbar button opens the side panel (and, through activeTab, lets it capture the tab).
chrome.sidePanel.setPanelBehavior({ openPanelOnActionClick: true }).catch((error) => console.error(error));
